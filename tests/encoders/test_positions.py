"""Encoders at input sizes other than the configured one (64 px, 8 px patches in the tiny models).

Expected behaviour from WalBouss/LeGrad ``legrad/utils.py`` ``vit_dynamic_size_forward`` (commit
c5c7b20d3bfc20169471f4a123abd0636c6a16e1), which MaskInversion inherits: grid = (H / p, W / p) from the input,
positional grid rows resampled with timm's ``resample_abs_pos_embed(..., num_prefix_tokens=1,
interpolation='bicubic', antialias=True)``, CLS row kept. timm (1.0.31, ``timm/layers/pos_embed.py``) is installed
and is the reference here; see ``official_resize.py``.
"""

import pytest
import torch
from torch.testing import assert_close

from tests.conftest import TINY_OPEN_CLIP
from tests.encoders.official_resize import built_at, checkpoint_table, timm_table
from tokencompose.encoders import OpenCLIPEncoder
from tokencompose.encoders.positions import resample_grid_positions
from tokencompose.types import EncoderRequest

EXACT = dict(atol=0.0, rtol=0.0)
SIZES = [(96, 96), (48, 48), (48, 80)]  # larger, smaller, non-square
GRIDS = [(12, 12), (6, 6), (6, 10), (9, 5)]


@pytest.fixture(params=["hf", "open_clip"])
def encoder(request, hf_encoder, open_clip_encoder):
    return hf_encoder if request.param == "hf" else open_clip_encoder


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_resampling_is_timms_antialiased_bicubic(grid, dtype):
    table = torch.randn(1 + 8 * 8, 16).to(dtype)
    ours = resample_grid_positions(table, (8, 8), grid)
    assert ours.shape == (1 + grid[0] * grid[1], 16) and ours.dtype == dtype
    assert_close(ours, timm_table(table, grid), **EXACT)
    assert_close(ours[0], table[0], **EXACT)  # the CLS row is kept
    # plain bicubic (HF's interpolate_pos_encoding) is another table, upsampling included: dropping antialias fails
    assert (ours.float() - timm_table(table, grid, antialias=False).float()).abs().max() > 0.05


def test_resampling_keeps_the_table_at_its_own_grid_and_checks_its_rows():
    table = torch.randn(1 + 8 * 8, 16)
    assert resample_grid_positions(table, (8, 8), (8, 8)) is table
    with pytest.raises(ValueError, match=r"65 rows, expected 1 \+ 6\*6"):
        resample_grid_positions(table, (6, 6), (8, 8))


@pytest.mark.parametrize("grid", GRIDS)
def test_encoder_position_table_is_timms(encoder, grid):
    table = checkpoint_table(encoder)
    ours = encoder.position_table(grid)
    assert_close(ours, timm_table(table, grid), **EXACT)
    assert (ours - timm_table(table, grid, antialias=False)).abs().max() > 1e-3
    assert encoder.position_table((8, 8)) is table  # the configured size: the checkpoint's table untouched


# HF CLIP configs are square, so its non-square case is test_hf_non_square_equals_hand_built
BUILT_AT = [("hf", size) for size in SIZES if size[0] == size[1]] + [("open_clip", size) for size in SIZES]


@pytest.mark.parametrize(("kind", "size"), BUILT_AT)
def test_forward_at_another_size_equals_the_official_resized_model(kind, size, hf_encoder, open_clip_encoder):
    """Ours at (H, W) == the library's own forward of the same weights built at (H, W) with timm's table."""
    encoder = hf_encoder if kind == "hf" else open_clip_encoder
    pixels = torch.randn(2, 3, *size)
    out, expected = encoder(pixels), built_at(encoder, size)(pixels)
    grid = (size[0] // 8, size[1] // 8)
    assert out.patches.shape == (2, *grid, 64)
    assert_close(out.patches, expected.patches, atol=1e-6, rtol=1e-5)
    assert_close(out.cls, expected.cls, atol=1e-6, rtol=1e-5)
    assert_close(out.embedding, expected.embedding, atol=1e-6, rtol=1e-5)
    plain = built_at(encoder, size, antialias=False)(pixels)
    assert (plain.embedding - out.embedding).abs().max() > 1e-4  # the test sees the interpolation kernel


def test_hf_non_square_equals_hand_built(hf_encoder):
    """HF's modules run by hand (embedding conv, CLS, timm's table, pre-norm, layers, post-norm, projection)."""
    pixels = torch.randn(2, 3, 48, 80)
    vision = hf_encoder._vision
    x = vision.embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)  # (B, 6*10, C)
    x = torch.cat([vision.embeddings.class_embedding.expand(2, 1, -1), x], dim=1)
    x = vision.pre_layrnorm(x + timm_table(checkpoint_table(hf_encoder), (6, 10)))
    hidden = [x]
    for layer in vision.encoder.layers:
        hidden.append(layer(hidden[-1], None))
    out = hf_encoder(pixels)
    assert_close(out.patches, hidden[-2][:, 1:].reshape(2, 6, 10, 64), atol=1e-6, rtol=1e-5)
    embedding = hf_encoder.model.visual_projection(vision.post_layernorm(hidden[-1][:, 0]))
    assert_close(out.embedding, embedding, atol=1e-6, rtol=1e-5)


def test_explicit_embeddings_equal_the_library_at_the_configured_size(hf_encoder, open_clip_encoder):
    pixels = torch.randn(2, 3, 64, 64)
    assert_close(hf_encoder.embeddings(pixels), hf_encoder._vision.embeddings(pixels), **EXACT)
    assert_close(open_clip_encoder.embeds(pixels), open_clip_encoder.visual._embeds(pixels), **EXACT)


@pytest.mark.parametrize("size", SIZES)
def test_explicit_blocks_equal_the_forward_at_another_size(encoder, size):
    pixels = torch.randn(2, 3, *size)
    tokens = 1 + (size[0] // 8) * (size[1] // 8)
    last = encoder.num_blocks - 1
    trace = encoder.trace_block(last, encoder.block_input(pixels, last))
    assert trace.attention.shape == (2, 4, tokens, tokens)
    out = encoder(pixels, EncoderRequest(cls_attention=frozenset({-1})))
    assert_close(encoder.project_pooled(trace.output[:, 0]), out.embedding, atol=1e-5, rtol=1e-4)
    assert_close(out.cls_attention[-1], trace.attention[:, :, 0, 1:], atol=1e-5, rtol=1e-4)
    previous = encoder.trace_block(last - 1, encoder.block_input(pixels, last - 1)).output
    assert_close(previous[:, 1:], out.patches.flatten(1, 2), atol=1e-5, rtol=1e-4)


def test_border_beyond_whole_patches_is_not_seen(encoder):
    pixels = torch.randn(1, 3, 70, 75)  # 8x9 whole patches of 8 px
    out, cropped = encoder(pixels), encoder(pixels[..., :64, :72].contiguous())
    assert out.patches.shape == (1, 8, 9, 64)
    assert_close(out.embedding, cropped.embedding, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="smaller than the patch size 8"):
        encoder(torch.randn(1, 3, 4, 64))


def test_open_clip_at_another_size_needs_class_token_pooling():
    config = {**TINY_OPEN_CLIP, "vision_cfg": {**TINY_OPEN_CLIP["vision_cfg"], "pool_type": "avg"}}
    encoder = OpenCLIPEncoder(config=config)
    assert encoder(torch.randn(1, 3, 64, 64)).embedding.shape == (1, 32)  # the configured size: open_clip's own
    with pytest.raises(NotImplementedError, match="pool_type='avg'"):
        encoder(torch.randn(1, 3, 96, 96))

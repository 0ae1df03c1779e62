import json

import open_clip
import pytest
import torch
from torch.testing import assert_close

from tests.conftest import TINY_HF_CLIP, TINY_OPEN_CLIP
from tokencompose.encoders import HFCLIPEncoder, OpenCLIPEncoder


def test_hf_encoder_shapes_and_selected_layer(hf_encoder):
    pixels = torch.randn(2, 3, 64, 64)
    out = hf_encoder(pixels)
    assert out.cls.shape == (2, 64) and out.patches.shape == (2, 8, 8, 64) and out.embedding.shape == (2, 32)
    hidden = hf_encoder.model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    assert_close(out.patches.flatten(1, 2), hidden[:, 1:])
    assert_close(out.cls, hidden[:, 0])
    assert not any(p.requires_grad for p in hf_encoder.parameters())
    hf_encoder.train()
    assert not hf_encoder.training  # a frozen encoder stays in eval mode


def test_hf_encoder_trainable_and_without_projection():
    encoder = HFCLIPEncoder(config=TINY_HF_CLIP, with_projection=False, freeze=False, select_layer=-1)
    out = encoder(torch.randn(1, 3, 64, 64))
    assert encoder.embed_dim == 64 and out.embedding.shape == (1, 64)
    out.patches.sum().backward()
    assert any(p.grad is not None for p in encoder.parameters())


def test_hf_encoder_concatenates_selected_layers():
    """A list of layers: their hidden states concatenated along the width, in list order, as transformers 5.23
    ``models/llava/modeling_llava.py`` (``get_image_features``) does for a list ``vision_feature_layer``."""
    encoder = HFCLIPEncoder(config=TINY_HF_CLIP, select_layer=[-1, 0])
    pixels = torch.randn(2, 3, 64, 64)
    out = encoder(pixels)
    hidden = encoder.model(pixel_values=pixels, output_hidden_states=True).hidden_states
    expected = torch.cat([hidden[-1], hidden[0]], dim=-1)  # (B, 1 + h*w, 2 * 64)
    assert encoder.hidden_size == 128 and out.patches.shape == (2, 8, 8, 128)
    assert_close(out.patches.flatten(1, 2), expected[:, 1:])
    assert_close(out.cls, expected[:, 0])
    with pytest.raises(ValueError, match="several layers"):
        encoder.projection_matrix()
    for bad in (3, [], [-2, -4]):  # 2 blocks: hidden states -3..2
        with pytest.raises(ValueError, match=r"select_layer=.*\[-3, 2\]"):
            HFCLIPEncoder(config=TINY_HF_CLIP, select_layer=bad)


def test_hf_encoder_loads_saved_checkpoint(tmp_path, hf_encoder):
    hf_encoder.model.save_pretrained(tmp_path)
    loaded = HFCLIPEncoder(name_or_path=str(tmp_path))
    pixels = torch.randn(1, 3, 64, 64)
    assert_close(loaded(pixels).patches, hf_encoder(pixels).patches)
    with pytest.raises(ValueError, match="exactly one"):
        HFCLIPEncoder()


def test_open_clip_encoder_shapes_and_layer(open_clip_encoder):
    pixels = torch.randn(2, 3, 64, 64)
    out = open_clip_encoder(pixels)
    assert out.cls.shape == (2, 64) and out.patches.shape == (2, 8, 8, 64) and out.embedding.shape == (2, 32)
    assert_close(out.embedding, open_clip_encoder.visual(pixels))
    last = OpenCLIPEncoder(config=TINY_OPEN_CLIP, select_layer=-1)
    last.visual.load_state_dict(open_clip_encoder.visual.state_dict())
    assert not torch.allclose(last(pixels).patches, out.patches)  # a different layer gives different tokens
    with pytest.raises(ValueError, match="select_layer"):
        OpenCLIPEncoder(config=TINY_OPEN_CLIP, select_layer=-3)


def test_open_clip_encoder_loads_named_model_from_checkpoint_file(tmp_path):
    """The real-weight path: a registered architecture name plus a checkpoint file, through open_clip's loader."""
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "tc-tiny-vit.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(config_dir)
    clip = open_clip.CLIP(**TINY_OPEN_CLIP)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(clip.state_dict(), checkpoint)
    encoder = OpenCLIPEncoder(model_name="tc-tiny-vit", pretrained=str(checkpoint))
    pixels = torch.randn(1, 3, 64, 64)
    assert_close(encoder(pixels).embedding, clip.visual(pixels))


@pytest.mark.parametrize("kind", ["hf", "open_clip"])
def test_explicit_blocks_equal_the_library(kind, hf_encoder, open_clip_encoder):
    encoder = hf_encoder if kind == "hf" else open_clip_encoder
    pixels = torch.randn(2, 3, 64, 64)
    last = encoder.num_blocks - 1
    x = encoder.block_input(pixels, last)
    trace = encoder.trace_block(last, x)
    assert trace.attention.shape == (2, 4, 65, 65)
    assert_close(trace.attention.sum(-1), torch.ones(2, 4, 65))
    # the last block's CLS through the final norm + projection is the library's image embedding
    assert_close(encoder.project_pooled(trace.output[:, 0]), encoder(pixels).embedding, atol=1e-5, rtol=1e-4)
    # and the block before the last reproduces the selected (-2) layer the encoder returns
    previous = encoder.trace_block(last - 1, encoder.block_input(pixels, last - 1)).output
    assert_close(previous[:, 1:], encoder(pixels).patches.flatten(1, 2), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["hf", "open_clip"])
def test_pooled_block_output_equals_mean_of_block_output(kind, hf_encoder, open_clip_encoder):
    encoder = hf_encoder if kind == "hf" else open_clip_encoder
    x = encoder.block_input(torch.randn(2, 3, 64, 64), 1)
    trace = encoder.trace_block(1, x)
    assert_close(encoder.pooled_block_output(1, x, trace.context), trace.output.mean(1), atol=1e-5, rtol=1e-4)

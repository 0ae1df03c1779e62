import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from tests.encoders.official_resize import built_at
from tokencompose.masks.legrad import legrad
from tokencompose.masks.mask_inversion import (
    MaskInversionSettings,
    mask_inversion_direct,
    mask_inversion_fast,
    soft_dice_loss,
)


def square_masks(count: int, size: int = 64) -> torch.Tensor:
    masks = torch.zeros(count, size, size)
    for k in range(count):
        x0, y0 = (k * 24) % 40, (k * 16) % 40
        masks[k, y0 : y0 + 24, x0 : x0 + 24] = 1
    return masks


@pytest.fixture(params=["hf", "open_clip"])
def encoder(request, hf_encoder, open_clip_encoder):
    return hf_encoder if request.param == "hf" else open_clip_encoder


def test_soft_dice_hand_computed():
    maps = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])
    masks = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert_close(soft_dice_loss(maps, masks), torch.tensor([1 - (2 * 1.5 + 1) / (1.5 + 2 + 1)]))


def test_legrad_maps_shape_range_and_dependence_on_embedding(encoder):
    pixels = torch.randn(1, 3, 64, 64).expand(3, -1, -1, -1)
    embeddings = torch.randn(3, encoder.embed_dim)
    maps = legrad(encoder, pixels, embeddings)
    assert maps.shape == (3, 64, 64)
    assert_close(maps.flatten(1).min(1).values, torch.zeros(3))
    assert_close(maps.flatten(1).max(1).values, torch.ones(3))
    assert not torch.allclose(maps[0], maps[1], atol=1e-3)  # a different embedding explains differently
    assert_close(legrad(encoder, pixels[:1], embeddings[:1]), maps[:1])  # one image per embedding


def test_mask_inversion_lowers_dice_and_moves_the_map_to_the_mask(encoder):
    image = torch.randn(1, 3, 64, 64)
    masks = square_masks(3)
    settings = MaskInversionSettings(iterations=1)
    _, first_maps = mask_inversion_direct(encoder, image, masks, settings)
    embeddings, maps = mask_inversion_direct(encoder, image, masks, MaskInversionSettings(iterations=15))
    assert embeddings.shape == (3, encoder.embed_dim)
    assert soft_dice_loss(maps, masks).mean() < soft_dice_loss(first_maps, masks).mean() - 0.02
    inside = (maps * masks).flatten(1).sum(1) / masks.flatten(1).sum(1)
    outside = (maps * (1 - masks)).flatten(1).sum(1) / (1 - masks).flatten(1).sum(1)
    assert (inside > outside).all()


def test_fast_equals_direct(encoder):
    torch.manual_seed(3)
    images = torch.randn(2, 3, 64, 64)
    masks = torch.stack([square_masks(3), square_masks(3).flip(-1)])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    settings = MaskInversionSettings(iterations=5, alpha=0.3, num_layers=2)
    fast, fast_maps = mask_inversion_fast(encoder, images, masks, valid, settings)
    for b in range(2):
        keep = valid[b]
        direct, direct_maps = mask_inversion_direct(encoder, images[b : b + 1], masks[b][keep], settings)
        assert_close(fast[b][keep], direct, atol=1e-4, rtol=1e-4)
        assert_close(fast_maps[b][keep], direct_maps, atol=1e-4, rtol=1e-4)


def test_fast_first_iteration_map_is_legrad_of_the_image_embedding(encoder):
    images = torch.randn(1, 3, 64, 64)
    masks = square_masks(2)[None]
    settings = MaskInversionSettings(iterations=1, num_layers=1)
    embeddings, maps = mask_inversion_fast(encoder, images, masks, settings=settings)
    start = encoder(images).embedding  # the map of step 1 is computed before the optimiser step
    expected = legrad(encoder, images.expand(2, -1, -1, -1), start.expand(2, -1), num_layers=1)
    assert_close(maps[0], expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(F.normalize(embeddings[0, 0], dim=-1), F.normalize(start[0], dim=-1))


# ---- other input sizes than the configured 64 px -------------------------------------------------------------
# Official behaviour: WalBouss/LeGrad legrad/utils.py ``vit_dynamic_size_forward`` (commit c5c7b20d3bfc20169471f4a123abd0636c6a16e1)
# resamples the positional grid with timm's antialiased bicubic and then runs the ordinary forward; LeGrad
# (legrad/wrapper.py ``compute_legrad_clip``, commit 8c2ca901a0dd185fba22314c32fa7857e24c5425) and MaskInversion
# (maskinversion/maskinversion.py, commit 6257297ae457a7ceeb0280214df4073fbf0a0b77) use that forward unchanged.
# So the reference at (H, W) is the same weights built at (H, W) with timm's table (tests/encoders/official_resize.py).
SIZES = [(96, 96), (48, 48), (48, 80)]  # larger, smaller, non-square
BUILT_AT = [("hf", size) for size in SIZES if size[0] == size[1]] + [("open_clip", size) for size in SIZES]


def box_masks(count: int, height: int, width: int) -> torch.Tensor:
    masks = torch.zeros(count, height, width)
    for k in range(count):
        top, left = (k * 8) % (height // 2), (k * 16) % (width // 2)
        masks[k, top : top + height // 2, left : left + width // 2] = 1
    return masks


@pytest.mark.parametrize("size", SIZES)
def test_fast_equals_direct_at_another_size(encoder, size):
    torch.manual_seed(5)
    images = torch.randn(2, 3, *size)
    masks = torch.stack([box_masks(2, *size), box_masks(2, *size).flip(-1)])
    valid = torch.tensor([[True, True], [False, True]])
    settings = MaskInversionSettings(iterations=2, alpha=0.3, num_layers=2)
    fast, fast_maps = mask_inversion_fast(encoder, images, masks, valid, settings)
    assert fast_maps.shape == (2, 2, *size)
    for b in range(2):
        keep = valid[b]
        direct, direct_maps = mask_inversion_direct(encoder, images[b : b + 1], masks[b][keep], settings)
        assert_close(fast[b][keep], direct, atol=1e-4, rtol=1e-4)
        assert_close(fast_maps[b][keep], direct_maps, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("kind", "size"), BUILT_AT)
def test_legrad_at_another_size_equals_the_official_resized_model(kind, size, hf_encoder, open_clip_encoder):
    encoder = hf_encoder if kind == "hf" else open_clip_encoder
    pixels = torch.randn(1, 3, *size).expand(3, -1, -1, -1)
    embeddings = torch.randn(3, encoder.embed_dim)
    maps = legrad(encoder, pixels, embeddings)
    assert maps.shape == (3, *size)
    assert_close(maps, legrad(built_at(encoder, size), pixels, embeddings), atol=1e-5, rtol=1e-4)
    plain = legrad(built_at(encoder, size, antialias=False), pixels, embeddings)
    assert (plain - maps).abs().max() > 1e-3  # plain bicubic positions give other maps


@pytest.mark.parametrize(("kind", "size"), [("hf", (96, 96)), ("open_clip", (48, 80))])
def test_mask_inversion_at_another_size_equals_the_official_resized_model(kind, size, hf_encoder, open_clip_encoder):
    encoder = hf_encoder if kind == "hf" else open_clip_encoder
    image, masks = torch.randn(1, 3, *size), box_masks(2, *size)
    settings = MaskInversionSettings(iterations=2)
    embeddings, maps = mask_inversion_direct(encoder, image, masks, settings)
    expected, expected_maps = mask_inversion_direct(built_at(encoder, size), image, masks, settings)
    assert_close(embeddings, expected, atol=1e-4, rtol=1e-4)
    assert_close(maps, expected_maps, atol=1e-4, rtol=1e-4)


def test_legrad_maps_cover_the_whole_patches(encoder):
    pixels = torch.randn(2, 3, 70, 75)  # 8x9 whole patches of 8 px; the border is not seen, as by the official code
    embeddings = torch.randn(2, encoder.embed_dim)
    maps = legrad(encoder, pixels, embeddings)
    assert maps.shape == (2, 64, 72)
    assert_close(maps, legrad(encoder, pixels[..., :64, :72].contiguous(), embeddings), atol=1e-5, rtol=1e-4)

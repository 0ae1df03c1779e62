import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

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

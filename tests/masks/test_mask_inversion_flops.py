"""The analytic MaskInversion FLOPs against ``torch.utils.flop_counter.FlopCounterMode`` on tiny encoders.

The counted programs are ours (``tokencompose.masks.mask_inversion``); the direct form follows
WalBouss/MaskInversion (image copied per mask, ``autograd.grad(create_graph=True)`` then ``loss.backward``).
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import TINY_OPEN_CLIP
from tokencompose.encoders import OpenCLIPEncoder
from tokencompose.masks.flops import ViTShape, ideal_speedup, mask_inversion_flops
from tokencompose.masks.mask_inversion import (
    MaskInversionSettings,
    mask_inversion_direct,
    mask_inversion_fast,
)


def counted(run) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


@pytest.mark.parametrize("masks, iterations", [(1, 1), (3, 2), (4, 3)])
def test_counts_equal_flop_counter(masks, iterations):
    config = dict(TINY_OPEN_CLIP, vision_cfg=dict(TINY_OPEN_CLIP["vision_cfg"], mlp_ratio=3.0))  # Dm != 4C
    encoder = OpenCLIPEncoder(config=config)
    image, targets = torch.randn(1, 3, 64, 64), (torch.rand(masks, 64, 64) > 0.5).float()
    settings = MaskInversionSettings(iterations=iterations, alpha=0.2)
    shape = ViTShape.from_open_clip(config["embed_dim"], config["vision_cfg"])
    assert shape.mlp_width == 192 and shape.tokens == 65
    direct = counted(lambda: mask_inversion_direct(encoder, image, targets, settings))
    fast = counted(lambda: mask_inversion_fast(encoder, image, targets[None], settings=settings))
    assert mask_inversion_flops(shape, masks, settings, "direct") == direct
    assert mask_inversion_flops(shape, masks, settings, "fast") == fast
    assert ideal_speedup(shape, masks, settings) == pytest.approx(direct / fast)


def test_counts_follow_the_input_grid_not_the_configured_one(open_clip_encoder):
    image, targets = torch.randn(1, 3, 48, 80), (torch.rand(2, 48, 80) > 0.5).float()  # a 6 x 10 grid
    settings = MaskInversionSettings(iterations=1)
    shape = ViTShape(width=64, mlp_width=256, embed_dim=32, layers=2, patch_size=8, grid=(6, 10))
    assert mask_inversion_flops(shape, 2, settings, "direct") == counted(
        lambda: mask_inversion_direct(open_clip_encoder, image, targets, settings))
    assert mask_inversion_flops(shape, 2, settings, "fast") == counted(
        lambda: mask_inversion_fast(open_clip_encoder, image, targets[None], settings=settings))


def test_encoder_forward_equals_the_encoder(open_clip_encoder):
    shape = ViTShape.from_open_clip(TINY_OPEN_CLIP["embed_dim"], TINY_OPEN_CLIP["vision_cfg"])
    with torch.no_grad():
        assert shape.encoder_forward() == counted(lambda: open_clip_encoder(torch.randn(1, 3, 64, 64)))


def test_ideal_speedup_at_real_shapes_grows_with_masks():
    vit_l = ViTShape.from_open_clip(768, dict(image_size=336, patch_size=14, width=1024, layers=24))
    settings = MaskInversionSettings()
    ratios = [ideal_speedup(vit_l, k, settings) for k in (1, 5, 20, 50, 10**6)]
    assert ratios == sorted(ratios) and ratios[0] > 1  # the direct form's K encoder passes amortise nothing


def test_rejects_what_it_does_not_count():
    shape = ViTShape(width=64, mlp_width=256, embed_dim=32, layers=2, patch_size=8, grid=(8, 8))
    with pytest.raises(ValueError, match="num_layers=2"):
        mask_inversion_flops(shape, 3, MaskInversionSettings(num_layers=2), "fast")
    with pytest.raises(ValueError, match="form='slow'"):
        mask_inversion_flops(shape, 3, MaskInversionSettings(), "slow")

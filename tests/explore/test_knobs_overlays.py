"""The explorer's pure parts: budget knobs read off a model, knob values -> recipe overrides, overlays."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import build_mask_llava
from tokencompose.encoders import HFCLIPEncoder
from tokencompose.explore.knobs import Knob, budget_knobs, describe, overrides, snap
from tokencompose.explore.overlays import PALETTE, heatmap_overlay, kept_patch_overlay, object_overlay
from tokencompose.tokenizers import CLSAttentionSelector, MatryoshkaPoolTokenizer, PatchPoolTokenizer


def test_knobs_are_the_tokenizers_test_time_settings_with_their_trained_values(text_tokenizer):
    model = build_mask_llava(text_tokenizer)  # CLS + 2x2 patches + up to 4 objects, 8x8 patch grid
    knobs = {k.key: k for k in budget_knobs(model)}
    assert list(knobs) == ["model.tokenizers.patch.grid", "model.tokenizers.objects.max_objects",
                           "model.tokenizers.objects.iou_threshold"]
    grid = knobs["model.tokenizers.patch.grid"]
    assert grid.value == 2 and grid.choices == tuple(range(1, 9)) and grid.contiguous
    assert knobs["model.tokenizers.objects.max_objects"].choices == (0, 1, 2, 3, 4)
    iou = knobs["model.tokenizers.objects.iou_threshold"]
    assert iou.value == 1.0 and not iou.contiguous  # None keeps every mask, as 1.0 does


def test_knobs_of_m3_are_its_budget_variants_and_fastervlm_keep_is_thinned(text_tokenizer):
    m3 = build_mask_llava(text_tokenizer, tokenizers={"patch": MatryoshkaPoolTokenizer(scales=(1, 4, 16, 64))})
    (scale,) = budget_knobs(m3)
    assert scale.key == "model.tokenizers.patch.scale"
    assert scale.choices == tuple(m3.tokenizers["patch"].budget_variants()) and scale.value == 64
    faster = build_mask_llava(text_tokenizer, tokenizers={"patch": CLSAttentionSelector(keep=12)})
    (keep,) = budget_knobs(faster)
    assert keep.choices == (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 32, 64) and keep.value == 12


def test_a_model_without_knobs_has_none(text_tokenizer):
    from tokencompose.tokenizers import GlobalTokenizer

    assert budget_knobs(build_mask_llava(text_tokenizer, tokenizers={"cls": GlobalTokenizer()},
                                         scaler=None)) == []


def test_overrides_keep_only_what_differs_from_the_trained_budget():
    knobs = [Knob("model.tokenizers.patch.grid", "grid", (1, 2, 3), 2),
             Knob("model.tokenizers.objects.max_objects", "objects", (0, 1, 2, 3, 4), 4)]
    assert overrides(knobs, [2, 4]) == {}
    assert overrides(knobs, [1.0, 3]) == {"model.tokenizers.objects.max_objects": 3, "model.tokenizers.patch.grid": 1}
    assert snap(knobs[0], 2.6) == 3
    assert describe(overrides(knobs, [1, 4])) == "patch.grid=1" and describe({}) == "as trained"
    with pytest.raises(ValueError, match="1 values for 2 knobs"):
        overrides(knobs, [1])


def test_object_overlay_tints_each_mask_in_its_colour_and_leaves_the_rest():
    image = np.full((4, 4, 3), 200, dtype=np.uint8)
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :2], masks[1, :, :1] = True, True
    out = object_overlay(image, masks, alpha=1.0)
    assert (out[3, 3] == 200).all()
    assert (out[0, 3] == PALETTE[0]).all() and (out[3, 0] == PALETTE[1]).all() and (out[0, 0] == PALETTE[1]).all()
    with pytest.raises(ValueError, match="do not match"):
        object_overlay(image, masks[:, :2])


def test_kept_patch_overlay_dims_exactly_the_dropped_patches():
    image = np.full((8, 8, 3), 100, dtype=np.uint8)
    out = kept_patch_overlay(image, np.array([0, 3]), grid=2, dim=0.5)  # patches: top-left and bottom-right kept
    assert (out[:4, :4] == 100).all() and (out[4:, 4:] == 100).all()
    assert (out[:4, 4:] == 50).all() and (out[4:, :4] == 50).all()
    with pytest.raises(ValueError, match="0..3"):
        kept_patch_overlay(image, np.array([4]), grid=2)


def test_heatmap_overlay_reddens_in_proportion_and_a_flat_map_draws_nothing():
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    out = heatmap_overlay(image, np.array([[0.0, 1.0], [0.5, 0.0]]), alpha=1.0)
    assert out[0, 1].tolist() == [255, 0, 0] and out[1, 0].tolist() == [128, 0, 0] and out[0, 0].tolist() == [0, 0, 0]
    assert (heatmap_overlay(image, np.ones((2, 2))) == 0).all()


def test_kept_patches_are_what_fastervlm_gathers(hf_encoder: HFCLIPEncoder):
    import torch

    selector = CLSAttentionSelector(keep=5, layer=-2)
    features = hf_encoder(torch.randn(2, 3, 64, 64), selector.encoder_request())
    index = selector.kept_patches(features)  # (2, 5)
    patches = features.patches.flatten(1, 2)
    gathered = torch.stack([patches[b, index[b]] for b in range(2)])
    torch.testing.assert_close(selector(features).tokens, gathered)
    assert (index.diff(dim=1) > 0).all()  # raster order
    assert PatchPoolTokenizer(grid=None).num_tokens(hf_encoder) == 64  # the grid knob's top value


def test_dominant_patches_are_the_patches_visionzip_keeps_whole(hf_encoder: HFCLIPEncoder):
    import torch

    from tokencompose.tokenizers import VisionZipTokenizer

    for keep_cls in (True, False):
        zip_ = VisionZipTokenizer(dominant=6, contextual=3, keep_cls=keep_cls)
        features = hf_encoder(torch.randn(2, 3, 64, 64), zip_.encoder_request())
        index = zip_.dominant_patches(features)  # (2, 5 or 6)
        assert index.shape == (2, 5 if keep_cls else 6)
        patches = features.patches.flatten(1, 2)
        dominant = zip_(features).tokens[:, 1:6] if keep_cls else zip_(features).tokens[:, :6]
        torch.testing.assert_close(dominant, torch.stack([patches[b, index[b]] for b in range(2)]))


def test_enlarge_repeats_pixels_by_a_whole_factor():
    from tokencompose.explore.overlays import enlarge

    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    big = enlarge(image, side=7)  # factor 2: 3 * 2 <= 7 < 3 * 3
    assert big.shape == (4, 6, 3) and (big[::2, ::2] == image).all() and (big[1::2, 1::2] == image).all()
    assert enlarge(image, side=2).shape == image.shape

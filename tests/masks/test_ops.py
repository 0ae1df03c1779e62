import torch
from torch.testing import assert_close

from tokencompose.masks import (
    background_mask,
    greedy_mask_nms,
    mask_iou,
    masked_average_pool,
    masks_to_patch_weights,
    select_top_k,
)


def boxes_to_masks(boxes: list[tuple[int, int, int, int]], size: int = 8) -> torch.Tensor:
    masks = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    return masks


def test_mask_iou_hand_computed():
    masks = boxes_to_masks([(0, 0, 4, 4), (2, 0, 6, 4), (0, 0, 0, 0)])[None]  # 16 px each, overlap 8 px
    iou = mask_iou(masks)[0]
    assert_close(iou[0, 1], torch.tensor(8 / 24))
    assert_close(iou[0, 0], torch.tensor(1.0))
    assert iou[2, 2] == 0  # empty masks overlap nothing


def test_greedy_nms_keeps_best_of_overlapping():
    masks = boxes_to_masks([(0, 0, 4, 4), (0, 0, 4, 3), (5, 5, 8, 8)])[None]  # 0 and 1: IoU 12/16
    scores = torch.tensor([[0.5, 0.9, 0.1]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    assert greedy_mask_nms(masks, scores, valid, iou_threshold=0.5).tolist() == [[False, True, True]]
    assert greedy_mask_nms(masks, scores, valid, iou_threshold=0.8).tolist() == [[True, True, True]]
    invalid = torch.tensor([[True, False, True]])
    assert greedy_mask_nms(masks, scores, invalid, iou_threshold=0.5).tolist() == [[True, False, True]]


def test_select_top_k_pads_short_rows():
    scores = torch.tensor([[0.1, 0.7, 0.3], [0.2, 0.9, 0.5]])
    keep = torch.tensor([[True, True, False], [False, False, False]])
    index, valid = select_top_k(scores, keep, k=4)
    assert index[0, :2].tolist() == [1, 0]
    assert valid.tolist() == [[True, True, False, False], [False] * 4]


def test_masked_average_pool_values_and_empty_mask():
    patches = torch.arange(16, dtype=torch.float).reshape(1, 4, 4, 1)  # (B, h, w, D) on a 4x4 grid
    masks = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    masks[0, 0, :4, :4] = True  # exactly patches (0,0),(0,1),(1,0),(1,1): values 0, 1, 4, 5
    tokens, nonempty = masked_average_pool(patches, masks)
    assert_close(tokens[0, 0, 0], torch.tensor(2.5))
    assert nonempty.tolist() == [[True, False]]
    assert tokens[0, 1].abs().sum() == 0


def test_partial_coverage_weights_patches_by_area():
    masks = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    masks[0, 0, 0:2, 0:1] = True  # half of patch (0, 0)
    weights = masks_to_patch_weights(masks, (4, 4))
    assert_close(weights[0, 0, 0, 0], torch.tensor(0.5))
    assert weights.sum() == 0.5


def test_masked_average_pool_is_permutation_equivariant():
    patches = torch.randn(2, 4, 4, 8)
    masks = torch.rand(2, 5, 16, 16) > 0.5
    perm = torch.randperm(5)
    tokens, _ = masked_average_pool(patches, masks)
    permuted, _ = masked_average_pool(patches, masks[:, perm])
    assert_close(permuted, tokens[:, perm])


def test_background_is_complement_of_valid_union():
    masks = boxes_to_masks([(0, 0, 4, 8), (4, 0, 8, 8)])[None]
    assert not background_mask(masks, torch.tensor([[True, True]])).any()
    assert background_mask(masks, torch.tensor([[True, False]]))[0, :, 4:].all()

import pytest
import torch

from tests.conftest import TINY_DETR, TINY_SAM
from tokencompose.masks import (
    DetrSamProposer,
    GroundTruthMasks,
    MaskPostprocess,
    ObjectAnnotator,
    SamGridProposer,
    build_sam,
    mask_iou,
)
from tokencompose.masks.mask_inversion import MaskInversionSettings
from tokencompose.types import ObjectMasks


def test_detr_sam_gives_one_mask_per_box_on_the_image():
    proposer = DetrSamProposer(detector_config=TINY_DETR, sam_config=TINY_SAM, num_boxes=5, detector_size=64)
    images = torch.rand(2, 3, 64, 64)
    boxes, scores = proposer.boxes(images)
    assert boxes.shape == (2, 5, 4) and scores.shape == (2, 5)
    assert (scores[:, :-1] >= scores[:, 1:]).all() and (boxes >= 0).all() and (boxes <= 64).all()
    objects = proposer(images)
    assert objects.masks.shape == (2, 5, 64, 64) and objects.masks.dtype == torch.bool
    assert "DetrSamProposer" in proposer.description


def test_detr_and_sam_load_saved_checkpoints(tmp_path):
    from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection

    detr = DeformableDetrForObjectDetection(DeformableDetrConfig(**TINY_DETR))
    detr.save_pretrained(tmp_path / "detr")
    sam = build_sam(config=TINY_SAM)
    torch.save(sam.state_dict(), tmp_path / "sam.pth")
    proposer = DetrSamProposer(detector=str(tmp_path / "detr"), sam_config=TINY_SAM, num_boxes=3, detector_size=64)
    proposer.sam.load_state_dict(torch.load(tmp_path / "sam.pth", weights_only=True))
    images = torch.rand(1, 3, 64, 64)
    assert torch.equal(proposer.boxes(images)[0], DetrSamProposer(detector=str(tmp_path / "detr"), sam_config=TINY_SAM,
                                                                  num_boxes=3, detector_size=64).boxes(images)[0])
    with pytest.raises(ValueError, match="variant"):
        build_sam(variant="vit_xxl")


def test_sam_grid_proposer_shapes():
    proposer = SamGridProposer(sam_config=TINY_SAM, points_per_side=2, pred_iou_thresh=0.0,
                               stability_score_thresh=0.0, max_masks=6)
    objects = proposer(torch.rand(1, 3, 64, 64))
    assert objects.masks.shape == (1, 6, 64, 64)
    assert (objects.scores[objects.valid] > -1).all()


def test_postprocess_min_area_nms_and_background():
    masks = torch.zeros(1, 3, 16, 16, dtype=torch.bool)
    masks[0, 0, :8, :8] = True
    masks[0, 1, :8, :7] = True  # overlaps mask 0 with IoU 56/64
    masks[0, 2, 15, 15] = True  # one pixel
    objects = ObjectMasks(masks, torch.tensor([[0.9, 0.8, 0.7]]), torch.ones(1, 3, dtype=torch.bool))
    out = MaskPostprocess(min_area=2, iou_threshold=0.5, background=True)(objects)
    assert out.valid.tolist() == [[True, False, False, True]]
    assert out.masks[0, 3].sum() == 256 - 64 and out.scores[0, 3] == 0
    kept = out.masks[0][out.valid[0]]
    assert mask_iou(kept[None])[0].fill_diagonal_(0).max() <= 0.5


def test_annotator_with_ground_truth_masks_adds_embeddings(hf_encoder):
    masks = torch.zeros(2, 2, 64, 64, dtype=torch.bool)
    masks[:, 0, :32, :32] = True
    masks[0, 1, 32:, 32:] = True
    given = ObjectMasks(masks, torch.ones(2, 2), masks.flatten(2).any(-1))
    annotator = ObjectAnnotator(GroundTruthMasks(), MaskInversionSettings(iterations=2))
    objects = annotator(hf_encoder, torch.randn(2, 3, 64, 64), given)
    assert objects.embeddings.shape == (2, 2, hf_encoder.embed_dim)
    assert objects.embeddings[1, 1].abs().sum() == 0  # no mask, no embedding
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        annotator(hf_encoder, torch.randn(2, 3, 64, 64), given)

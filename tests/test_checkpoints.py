"""load_weights: every tensor it does not copy is reported; strict_shapes makes a shape mismatch an error."""

import logging

import pytest
import torch
from torch import nn

from tokencompose.checkpoints import load_weights


def stage(width: int) -> nn.Module:
    """A stand-in for a VLM: an encoder-like part and a projector whose input width depends on the tokenizers."""
    return nn.ModuleDict({"encoder": nn.Linear(4, 4), "projector": nn.Sequential(nn.Linear(width, 8), nn.GELU(), nn.Linear(8, 8))})


@pytest.fixture
def checkpoint(tmp_path):
    """A Lightning-style checkpoint of a stage whose projector reads width 6, plus a tensor no model has."""
    torch.manual_seed(0)
    state = stage(6).state_dict()
    state["old_head.weight"] = torch.zeros(2, 2)
    path = tmp_path / "stage1.ckpt"
    torch.save({"state_dict": state, "global_step": 3}, path)
    return path, state


def test_every_skipped_tensor_is_logged_with_both_shapes(checkpoint, caplog):
    path, state = checkpoint
    model = stage(5)
    before = model["projector"][0].weight.clone()
    with caplog.at_level(logging.WARNING, logger="tokencompose.checkpoints"):
        report = load_weights(model, str(path))
    assert report.shape_mismatches == [("projector.0.weight", (8, 6), (8, 5))]
    assert report.unexpected == ["old_head.weight"] and report.missing == []
    torch.testing.assert_close(model["encoder"].weight, state["encoder.weight"])  # matching tensors are copied
    torch.testing.assert_close(model["projector"][2].weight, state["projector.2.weight"])
    torch.testing.assert_close(model["projector"][0].weight, before)  # the mismatched one is left alone
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "projector.0.weight (checkpoint [8, 6], model [8, 5])" in message and "old_head.weight" in message


def test_missing_tensors_are_listed(tmp_path, caplog):
    path = tmp_path / "encoder_only.pt"
    torch.save({"encoder.weight": torch.ones(4, 4), "encoder.bias": torch.ones(4)}, path)
    with caplog.at_level(logging.WARNING, logger="tokencompose.checkpoints"):
        report = load_weights(stage(5), str(path))
    assert sorted(report.missing) == ["projector.0.bias", "projector.0.weight", "projector.2.bias", "projector.2.weight"]
    assert "4 kept as initialised (not in the checkpoint): projector.0.weight" in caplog.text


def test_strict_shapes_makes_a_mismatch_an_error_naming_the_tensor(checkpoint):
    path, _ = checkpoint
    model = stage(5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"init_weights: .*strict_shapes.*projector\.0\.weight \(checkpoint \[8, 6\], model \[8, 5\]\)"):
        load_weights(model, str(path), strict_shapes=True)
    for name, tensor in model.state_dict().items():  # nothing was copied before the error
        torch.testing.assert_close(tensor, before[name])
    assert load_weights(stage(6), str(path), strict_shapes=True).shape_mismatches == []


def test_a_checkpoint_of_another_model_is_an_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.ones(3)}, path)
    with pytest.raises(ValueError, match="no tensor .* matches"):
        load_weights(stage(5), str(path), key="--ckpt")


def test_vlm_init_weights_can_refuse_a_checkpoint_that_does_not_fit(tmp_path, text_tokenizer):
    from tests.conftest import build_mask_llava

    state = build_mask_llava(text_tokenizer).state_dict()
    state["projectors.shared.layers.0.weight"] = torch.zeros(64, 48)  # a stage 1 that read 48-wide tokens
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match=r"init_weights: .* does not fit this model \(strict_shapes\)"):
        build_mask_llava(text_tokenizer, init_weights=str(path), init_strict_shapes=True)
    build_mask_llava(text_tokenizer, init_weights=str(path))  # default: copies what fits, logs the rest

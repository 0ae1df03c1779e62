"""Training never steps on a non-finite loss, the optimiser holds exactly the trainable parameters, and settings
that cannot work fail when the model is built."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import build_mask_llava
from tests.recipe_utils import TINY_RECIPES, small_data
from tokencompose.optimization import Optimization
from tokencompose.recipes import TokenComposeCLI


@pytest.mark.parametrize("recipe", TINY_RECIPES, ids=lambda p: p.name)
def test_the_optimizer_holds_exactly_the_trainable_parameters(recipe, synthetic_root):
    # stage 2's init_weights (a stage-1 checkpoint) does not change which parameters train
    cli = TokenComposeCLI(args=["--config", str(recipe), "--model.init_weights", "null", *small_data(synthetic_root)],
                          run=False)
    model = cli.model

    class FakeTrainer:
        estimated_stepping_batches = 10

    model._trainer = FakeTrainer()  # configure_optimizers only reads the schedule length
    groups = model.configure_optimizers()["optimizer"].param_groups
    optimised = [id(p) for g in groups for p in g["params"]]
    assert len(optimised) == len(set(optimised)), "a parameter is in two groups"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(optimised) == trainable
    assert {g["name"] for g in groups} <= {name for name, _ in model.named_children()}


def test_text_fusion_has_its_own_learning_rate(text_tokenizer):
    from tests.test_schemes import llava_mini

    with pytest.raises(ValueError, match=r"learning_rates: unknown part\(s\) \['projector'\]"):
        llava_mini(text_tokenizer, optimization=Optimization(learning_rates={"projector": 1e-3}))
    model = llava_mini(text_tokenizer, optimization=Optimization(lr=1e-4, learning_rates={"text_fusion": 1e-2}))
    groups = {g["name"]: g for g in model.parameter_groups()}
    assert groups["text_fusion"]["lr"] == 1e-2
    assert {id(p) for p in groups["text_fusion"]["params"]} == {id(p) for p in model.text_fusion.parameters()}


def test_max_length_below_the_budget_fails_at_build_time_naming_the_key(text_tokenizer):
    with pytest.raises(ValueError, match=r"model\.max_length=8 leaves no room for text: one image alone takes 9"):
        build_mask_llava(text_tokenizer, max_length=8)
    with pytest.raises(ValueError, match=r"model\.max_new_tokens=0"):
        build_mask_llava(text_tokenizer, max_new_tokens=0)


def fit_with_nan(model, batch, steps: int, nan_steps) -> L.Trainer:
    original = model.training_step

    def poisoned(b, batch_idx):
        loss = original(b, batch_idx)
        return loss * float("nan") if nan_steps(model.global_step) else loss

    model.training_step = poisoned
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, DataLoader([batch] * steps, batch_size=None, collate_fn=lambda b: b))
    return trainer


def test_a_non_finite_loss_is_skipped_and_counted(text_tokenizer, make_batch):
    model = build_mask_llava(text_tokenizer, optimization=Optimization(lr=1e-3, max_nonfinite_steps=3))
    batch = make_batch(model, count=2)
    trainer = fit_with_nan(model, batch, steps=6, nan_steps=lambda step: step in (1, 2))
    assert model.skipped_steps == 2
    assert trainer.global_step == 6
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
    state = trainer.optimizers[0].state
    assert all(torch.isfinite(v).all() for s in state.values() for v in s.values() if torch.is_tensor(v))


def test_non_finite_steps_in_a_row_stop_training_with_a_clear_error(text_tokenizer, make_batch):
    model = build_mask_llava(text_tokenizer, optimization=Optimization(lr=1e-3, max_nonfinite_steps=3))
    batch = make_batch(model, count=2)
    with pytest.raises(FloatingPointError, match=r"3 optimizer steps in a row had a non-finite loss or gradient"):
        fit_with_nan(model, batch, steps=20, nan_steps=lambda step: step >= 4)
    assert model.skipped_steps == 3
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())

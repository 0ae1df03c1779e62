"""A trained run, as a user meets it: ``last.ckpt`` where the recipe says, the recipe inside it (``tokencompose.load``
rebuilds the model without the YAML)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

import tokencompose
from tests.recipe_utils import REPO
from tokencompose.cli import main
from tokencompose.model import RECIPE_KEY

LLAVA = REPO / "recipes" / "tiny" / "llava15.yaml"


def data_args(root: Path) -> list[str]:
    """The synthetic session data, small; unlike ``small_data`` the recipe's own callbacks stay."""
    return ["--data.synthetic.root", str(root), "--data.synthetic.train_samples", "96", "--data.synthetic.val_samples",
            "32", "--data.synthetic.samples_per_shard", "32", "--data.num_workers", "0", "--trainer.logger", "false"]


@pytest.fixture(scope="module")
def run(synthetic_root, tmp_path_factory) -> Path:
    """Two steps of the tiny LLaVA-1.5 recipe, run from a fresh folder (its relative paths land there)."""
    folder, before = tmp_path_factory.mktemp("run"), os.getcwd()
    os.chdir(folder)
    try:
        main(["fit", "--config", str(LLAVA), "--trainer.max_steps", "2", "--trainer.val_check_interval", "1000",
              *data_args(synthetic_root)])
    finally:
        os.chdir(before)
    return folder


def test_fit_writes_last_ckpt_where_the_recipe_says_with_the_recipe_inside(run):
    checkpoint = run / "checkpoints" / "tiny_llava15" / "last.ckpt"  # the recipe's header and the README say so
    assert checkpoint.is_file()
    state = torch.load(checkpoint, weights_only=True)
    recipe = yaml.safe_load(state[RECIPE_KEY])
    assert recipe["model"]["tokenizers"]["patch"]["init_args"]["grid"] is None
    assert recipe["model"]["init_weights"] is None and "trainer" not in recipe  # the model's own section only


def test_load_rebuilds_the_model_from_the_checkpoint_alone(run, make_batch):
    checkpoint = run / "checkpoints" / "tiny_llava15" / "last.ckpt"
    weights = torch.load(checkpoint, weights_only=True)["state_dict"]
    model = tokencompose.load(checkpoint).eval()
    assert model.visual_tokens_per_image() == {"patch": 64}
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, weights[name], rtol=0, atol=0)
    from tokencompose.recipes import load_recipe

    reference = load_recipe([LLAVA], checkpoint=str(checkpoint)).eval()  # the YAML + the checkpoint, as before
    batch = make_batch(model, 2)
    torch.testing.assert_close(model(batch)[0], reference(batch)[0])
    smaller = tokencompose.load(checkpoint, {"model.tokenizers.patch.init_args.grid": 2})  # a test-time budget
    assert smaller.visual_tokens_per_image() == {"patch": 4}


def test_load_says_what_is_wrong_with_a_checkpoint(run, tmp_path):
    checkpoint = run / "checkpoints" / "tiny_llava15" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": state["state_dict"]}, bare)
    with pytest.raises(ValueError, match="has no recipe .* --config RECIPE"):
        tokencompose.load(bare)
    with pytest.raises(ValueError, match=r"does not fit .*projectors\.shared"):
        tokencompose.load(checkpoint, {"model.projector.init_args.depth": 3})

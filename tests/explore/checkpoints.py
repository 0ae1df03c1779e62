"""Checkpoints for the explorer's tests: a tiny recipe's model saved as ``tokencompose fit`` saves it (its weights
and the recipe inside), without training: the explorer reads what a checkpoint holds, never how good it is."""

from __future__ import annotations

from pathlib import Path

import torch

from tokencompose.model import RECIPE_KEY
from tokencompose.recipes import load_recipe


def save_untrained(recipe: Path, path: Path, overrides: dict[str, str] | None = None) -> Path:
    model = load_recipe([recipe], {"trainer.logger": "false", **(overrides or {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), RECIPE_KEY: model.recipe}, path)
    return path

"""Loading weights from a previous stage's checkpoint (no pickle: ``weights_only=True``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def load_weights(module: nn.Module, path: str, key: str = "init_weights") -> None:
    """Copy matching tensors from a Lightning ``.ckpt`` (its ``state_dict``) or a plain state-dict file.

    Only tensors whose names and shapes match are copied; a checkpoint that matches nothing is an error, since
    it almost certainly belongs to another model.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{key}: checkpoint {path!r} does not exist")
    state = torch.load(file, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    own = module.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise ValueError(f"{key}: no tensor of {path!r} matches this model's parameter names and shapes")
    module.load_state_dict(matching, strict=False)

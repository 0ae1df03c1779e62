"""Loading weights from a previous stage's checkpoint (no pickle: ``weights_only=True``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)
LISTED = 20  # unknown / missing names shown per message (all shape mismatches are always shown)


@dataclass
class LoadReport:
    """What ``load_weights`` did: tensors copied, and every tensor it did not copy and why."""

    loaded: list[str] = field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # name, file, model
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    missing: list[str] = field(default_factory=list)  # in the model, not in the file

    def describe(self) -> str:
        parts = [f"copied {len(self.loaded)} tensor(s)"]
        if self.shape_mismatches:
            shapes = "; ".join(f"{n} (checkpoint {list(a)}, model {list(b)})" for n, a, b in self.shape_mismatches)
            parts.append(f"skipped {len(self.shape_mismatches)} for a shape mismatch: {shapes}")
        for label, names in (("not in this model", self.unexpected), ("kept as initialised (not in the checkpoint)", self.missing)):
            if names:
                more = f", ... and {len(names) - LISTED} more" if len(names) > LISTED else ""
                parts.append(f"{len(names)} {label}: {', '.join(names[:LISTED])}{more}")
        return "; ".join(parts)


def load_weights(module: nn.Module, path: str, key: str = "init_weights", strict_shapes: bool = False) -> LoadReport:
    """Copy matching tensors from a Lightning ``.ckpt`` (its ``state_dict``) or a plain state-dict file.

    Only tensors whose names and shapes match are copied. Everything else is reported in one log message: each
    tensor skipped for a shape mismatch (name, checkpoint shape, model shape), the checkpoint's names the model
    lacks and the model's names the checkpoint lacks. With ``strict_shapes`` a shape mismatch is an error naming
    every such tensor (a projector of another width would otherwise stay randomly initialised). A checkpoint
    that matches nothing is always an error, since it almost certainly belongs to another model.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{key}: checkpoint {path!r} does not exist")
    state = torch.load(file, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    own = module.state_dict()
    report = LoadReport(missing=[k for k in own if k not in state])
    matching = {}
    for name, tensor in state.items():
        if name not in own:
            report.unexpected.append(name)
        elif own[name].shape != tensor.shape:
            report.shape_mismatches.append((name, tuple(tensor.shape), tuple(own[name].shape)))
        else:
            matching[name] = tensor
            report.loaded.append(name)
    if strict_shapes and report.shape_mismatches:
        raise ValueError(f"{key}: {path!r} does not fit this model (strict_shapes): {report.describe()}")
    if not matching:
        raise ValueError(f"{key}: no tensor of {path!r} matches this model's parameter names and shapes: {report.describe()}")
    module.load_state_dict(matching, strict=False)
    if report.shape_mismatches or report.unexpected or report.missing:
        log.warning("%s: %s: %s", key, path, report.describe())
    else:
        log.info("%s: %s: %s", key, path, report.describe())
    return report

"""Distributed strategies for recipes (a function, so a recipe can name it as ``trainer.strategy.class_path``)."""

from __future__ import annotations

import importlib
from typing import Literal

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn


def import_class(path: str) -> type[nn.Module]:
    """``package.module.Class`` -> the class (an explicit import, like a recipe's ``class_path``)."""
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"fsdp: cannot import {path!r}: {error}") from error
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"fsdp: {path!r} is not an nn.Module class")
    return cls


def fsdp(
    wrap: list[str],
    activation_checkpointing: bool = True,
    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"] = "FULL_SHARD",
    state_dict_type: Literal["full", "sharded"] = "sharded",
    cpu_offload: bool = False,
) -> FSDPStrategy:
    """FSDP that shards each instance of the ``wrap`` classes (e.g. the LLM's decoder layers) as one unit and,
    optionally, recomputes their activations in the backward pass."""
    classes = {import_class(path) for path in wrap}
    return FSDPStrategy(
        auto_wrap_policy=classes,
        activation_checkpointing_policy=classes if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        cpu_offload=cpu_offload,
    )

"""Distributed strategies for recipes (a function, so a recipe can name it as ``trainer.strategy.class_path``)."""

from __future__ import annotations

import importlib
from typing import Literal, Protocol, runtime_checkable

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn


@runtime_checkable
class ShardingUnits(Protocol):
    """A model that says which of its module classes are its FSDP units (``VLM``: its LLM's decoder layer)."""

    def fsdp_unit_classes(self) -> frozenset[type[nn.Module]]: ...


def unit_classes(root: nn.Module) -> frozenset[type[nn.Module]]:
    """The FSDP unit classes reported by ``root`` or the first module under it that reports them."""
    for module in root.modules():
        if isinstance(module, ShardingUnits):
            return module.fsdp_unit_classes()
    raise ValueError(
        f"fsdp(wrap='auto'): {type(root).__name__} does not say which layers to shard (no `fsdp_unit_classes`); "
        "name them: trainer.strategy.init_args.wrap: [package.module.DecoderLayer]"
    )


class ReportedUnits:
    """FSDP auto-wrap (and activation-checkpointing) policy: every instance of the classes the model itself
    reports (``ShardingUnits``), read from the model when FSDP first asks.

    This is FSDP's callable policy form, ``policy(module, recurse, nonwrapped_numel)``: FSDP asks about a module
    only after its parent said to recurse, so the first module asked is the root it wraps — the model — and the
    classes are those of the LLM actually built (a Vicuna recipe gets ``LlamaDecoderLayer``, a Qwen2 one
    ``Qwen2DecoderLayer``), not a class path repeated in a recipe.
    """

    def __init__(self) -> None:
        self.classes: frozenset[type[nn.Module]] | None = None

    def __call__(self, module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
        if self.classes is None:
            self.classes = unit_classes(module)
        return True if recurse else isinstance(module, tuple(self.classes))


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
    wrap: list[str] | Literal["auto"] = "auto",
    activation_checkpointing: bool = True,
    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"] = "FULL_SHARD",
    state_dict_type: Literal["full", "sharded"] = "sharded",
    cpu_offload: bool = False,
) -> FSDPStrategy:
    """FSDP that shards each decoder layer as one unit and, optionally, recomputes its activations in the
    backward pass.

    ``wrap``: ``auto`` — the classes the model reports (``ReportedUnits``: the decoder layer class of the LLM
    built, which LLaVA-Mini's pre-fusion layers share) — or explicit class paths.
    """
    if wrap == "auto":
        policy: ReportedUnits | set[type[nn.Module]] = ReportedUnits()
    elif isinstance(wrap, list) and wrap:
        policy = {import_class(path) for path in wrap}
    else:
        raise ValueError(f"fsdp: wrap={wrap!r}; give 'auto' or a non-empty list of class paths")
    return FSDPStrategy(
        auto_wrap_policy=policy,
        activation_checkpointing_policy=policy if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        cpu_offload=cpu_offload,
    )

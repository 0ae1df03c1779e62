"""The test-time budget knobs a trained model exposes, as recipe overrides for ``tokencompose.load``.

A knob is one tokenizer setting that changes how many visual tokens reach the LLM without changing a weight:
the pooled patch grid, the object count and IoU threshold, FasterVLM's keep count, VisionZip's dominant and
contextual counts, M3's scale and MQT's query count (the last two are the tokenizers' ``budget_variants()``).
The explorer applies a knob by reloading the checkpoint with the override, the path every other command uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokencompose.encoders.base import VisionEncoder
from tokencompose.model import VLM
from tokencompose.tokenizers import (
    CLSAttentionSelector,
    MatryoshkaPoolTokenizer,
    MatryoshkaQueryTransformer,
    ObjectTokenizer,
    PatchPoolTokenizer,
    VisionZipTokenizer,
)
from tokencompose.tokenizers.base import VisualTokenizer

IOU_THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class Knob:
    """One budget setting: ``key`` is its recipe key (``model.tokenizers.patch.grid``), ``value`` what the model
    runs with now, ``choices`` the values it may take (ascending)."""

    key: str
    label: str
    choices: tuple[Any, ...]
    value: Any

    @property
    def contiguous(self) -> bool:
        """Whether the choices are every integer from the first to the last (a slider), else a list to pick from."""
        ints = all(isinstance(c, int) for c in self.choices)
        return ints and list(self.choices) == list(range(self.choices[0], self.choices[-1] + 1))


def _ascending(values: Sequence[Any], current: Any) -> tuple[Any, ...]:
    return tuple(sorted({*values, current}))


def _counts(top: int) -> list[int]:
    """1..top, thinned to at most ~12 values past 8 (a slider over 1..576 is unusable), ``top`` always included."""
    if top <= 16:
        return list(range(1, top + 1))
    values, v = list(range(1, 9)), 8
    while v < top:
        v *= 2
        values.append(min(v, top))
    return values


# tokenizer class -> its knobs: (attribute = recipe init arg, label, choices for this tokenizer and encoder)
KnobSpec = tuple[str, str, Callable[[Any, VisionEncoder], Sequence[Any]]]
KNOBS: dict[type[VisualTokenizer], list[KnobSpec]] = {
    PatchPoolTokenizer: [("grid", "patch grid side", lambda t, e: range(1, e.grid_size + 1))],
    ObjectTokenizer: [
        ("max_objects", "object count", lambda t, e: range(0, max(t.max_objects, t.train_max_objects or 0, 1) + 1)),
        ("iou_threshold", "object IoU threshold", lambda t, e: IOU_THRESHOLDS),
    ],
    CLSAttentionSelector: [("keep", "FasterVLM kept patches", lambda t, e: _counts(e.grid_size**2))],
    VisionZipTokenizer: [
        ("dominant", "VisionZip dominant tokens", lambda t, e: _counts(e.grid_size**2 + int(t.keep_cls) - t.contextual)),
        ("contextual", "VisionZip contextual tokens", lambda t, e: [0, *_counts(e.grid_size**2 + int(t.keep_cls) - t.dominant)]),
    ],
    MatryoshkaPoolTokenizer: [("scale", "M3 scale", lambda t, e: t.budget_variants())],
    MatryoshkaQueryTransformer: [("active", "MQT queries", lambda t, e: t.budget_variants())],
}


def _current(tokenizer: VisualTokenizer, attribute: str, encoder: VisionEncoder) -> Any:
    """The setting in force; ``None`` (= everything) shown as the value it amounts to."""
    value = getattr(tokenizer, attribute)
    if value is not None:
        return value
    if isinstance(tokenizer, PatchPoolTokenizer):
        return encoder.grid_size
    if isinstance(tokenizer, CLSAttentionSelector):
        return encoder.grid_size**2
    if isinstance(tokenizer, MatryoshkaQueryTransformer):
        return tokenizer.count()
    return 1.0  # ObjectTokenizer.iou_threshold None keeps every mask, as 1.0 does


def budget_knobs(model: VLM) -> list[Knob]:
    """Every budget knob of ``model``'s tokenizers, in stream order (a model with none gives [])."""
    knobs = []
    for name, tokenizer in model.tokenizers.items():
        for kind, specs in KNOBS.items():
            if not isinstance(tokenizer, kind):
                continue
            for attribute, label, choices in specs:
                value = _current(tokenizer, attribute, model.encoder)
                knobs.append(Knob(f"model.tokenizers.{name}.{attribute}", f"{name}: {label}",
                                  _ascending(list(choices(tokenizer, model.encoder)), value), value))
    return knobs


def snap(knob: Knob, value: Any) -> Any:
    """The choice of ``knob`` nearest ``value`` (a slider may report 3.0 for 3)."""
    return min(knob.choices, key=lambda c: abs(float(c) - float(value)))


def overrides(knobs: Sequence[Knob], values: Sequence[Any]) -> dict[str, Any]:
    """Knob values (one per knob, as the page reports them) -> the recipe overrides that differ from the trained
    model, sorted by key (a cache key: the same budget twice loads once)."""
    if len(values) != len(knobs):
        raise ValueError(f"overrides: {len(values)} values for {len(knobs)} knobs {[k.key for k in knobs]}")
    chosen = {k.key: snap(k, v) for k, v in zip(knobs, values, strict=True)}
    return {key: chosen[key] for key in sorted(chosen) if chosen[key] != next(k.value for k in knobs if k.key == key)}


def describe(settings: Mapping[str, Any]) -> str:
    """Overrides -> one short line for a panel title: ``patch.grid=1, objects.max_objects=2`` (or ``as trained``)."""
    return ", ".join(f"{k.removeprefix('model.tokenizers.')}={v}" for k, v in settings.items()) or "as trained"

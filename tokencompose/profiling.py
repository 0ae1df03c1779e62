"""Per-stage cost of a forward pass: wall time or FLOPs (counted by ``torch.utils.flop_counter``)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

STAGES = ("encoder", "mask_front_end", "reduction", "projector", "prefill", "decode")


class StageProfiler:
    """Accumulates, per named stage, wall seconds (``count_flops=False``) or FLOPs (``True``).

    Timing and FLOP counting are separate passes: counting slows the run it observes.
    """

    def __init__(self, count_flops: bool = False) -> None:
        self.count_flops = count_flops
        self.seconds: dict[str, float] = defaultdict(float)
        self.flops: dict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.count_flops:
            with FlopCounterMode(display=False) as counter:
                yield
            self.flops[name] += counter.get_total_flops()
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        yield
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds[name] += time.perf_counter() - start


def stage(profiler: StageProfiler | None, name: str) -> contextlib.AbstractContextManager:
    """``profiler.stage(name)``, or nothing when no profiler is given."""
    return profiler.stage(name) if profiler is not None else contextlib.nullcontext()

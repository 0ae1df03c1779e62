"""Lightning callbacks: progress that reads well where it is shown (see ``tokencompose.progress``).

``default_progress_bar()`` picks ``TerminalProgressBar`` on a terminal and ``LogProgress`` (a plain line every
``interval_s`` seconds: step, loss, samples/s, ETA) otherwise; the CLIs add it to every run whose recipe names
no progress bar of its own and does not set ``trainer.enable_progress_bar: false``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any

from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from tokencompose.progress import DEFAULT_INTERVAL_S, LineMeter, duration, is_terminal


class TerminalProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar without the logger's version number (``v_num``) among the metrics. (The rich bar
    writes ``Epoch 9/-2`` when training is bounded by ``max_steps``; tqdm's writes ``Epoch 9``.)"""

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, int | str | float | dict[str, float]]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class LogProgress(ProgressBar):
    """Plain progress lines for a log file: a training line every ``interval_s`` seconds (and at the first and
    last step), e.g. ``train step 120/3000 | epoch 0 | loss 1.2345 | 14.2 samples/s | elapsed 0:02:10 |
    ETA 0:43:40``, one line per validation with its metrics, and predict/test batch counts."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, stream: IO[str] | None = None) -> None:
        super().__init__()
        if not interval_s > 0:
            raise ValueError(f"LogProgress: interval_s={interval_s}; must be > 0")
        self.interval_s, self.stream = interval_s, stream
        self._enabled = True
        self._last: float | None = None
        self._start = self._samples = 0.0
        self._meter: LineMeter | None = None
        self._first_step = 0
        self._total: int | None = None

    # ProgressBar's switches (Lightning disables the bar on ranks other than 0)
    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _write(self, line: str) -> None:
        if not self._enabled:
            return
        stream = self.stream if self.stream is not None else sys.stdout
        stream.write(line + "\n")
        stream.flush()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._start, self._samples, self._last = time.monotonic(), 0.0, None
        self._first_step = trainer.global_step
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
        self._total = int(total) if total is not None and math.isfinite(total) else None  # None: an unsized stream

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._samples += len(batch) if hasattr(batch, "__len__") else 0
        now, total, step = time.monotonic(), self._total, trainer.global_step
        if not (self._last is None or now - self._last >= self.interval_s or (total is not None and step >= total)):
            return
        self._last = now
        elapsed = now - self._start
        parts = [f"train step {step}/{total if total is not None else '?'}", f"epoch {trainer.current_epoch}"]
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        if elapsed > 0:
            parts.append(f"{self._samples / elapsed:.2f} samples/s")
        parts.append(f"elapsed {duration(elapsed)}")
        done = step - self._first_step
        if total is not None and done > 0:
            parts.append(f"ETA {duration(elapsed / done * max(0, total - step))}")
        self._write(" | ".join(parts))

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val")}
        shown = " | ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        self._write(f"validation at step {trainer.global_step}" + (f" | {shown}" if shown else ""))

    def _start_meter(self, desc: str, total: Any) -> None:
        total = sum(total) if isinstance(total, list) else total
        known = total is not None and math.isfinite(total)
        self._meter = LineMeter(int(total) if known else None, desc, "batch", interval_s=self.interval_s,
                                stream=self.stream)

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._start_meter("predict", trainer.num_predict_batches)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._start_meter("test", trainer.num_test_batches)

    def _advance(self) -> None:
        if self._meter is not None and self._enabled:
            self._meter.update(1)

    def on_predict_batch_end(self, *_: Any, **__: Any) -> None:
        self._advance()

    def on_test_batch_end(self, *_: Any, **__: Any) -> None:
        self._advance()


def default_progress_bar() -> ProgressBar:
    """The progress callback a run gets unless its recipe chooses one: a bar on a terminal, lines otherwise."""
    return TerminalProgressBar() if is_terminal() else LogProgress()


def with_default_progress(callbacks: Any, enable_progress_bar: bool | None) -> list[Any]:
    """``callbacks`` (None, one or a list) plus ``default_progress_bar()`` where progress is on and none is given."""
    listed = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
    if enable_progress_bar is False or any(isinstance(c, ProgressBar) for c in listed):
        return listed
    return [*listed, default_progress_bar()]

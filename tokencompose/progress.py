"""Progress that reads well where it is shown: a bar on a terminal, periodic plain lines in a log file.

Under SLURM or CI stdout is a file: a bar there is either nothing until the end or one endless line of
carriage returns. ``meter()`` picks tqdm on a terminal and a ``LineMeter`` otherwise, for the loops outside
Lightning (eval, sweep, annotate, convert); ``tokencompose.callbacks`` makes the same choice for Lightning runs.
No Lightning import here: the light tools (``data convert-llava``) use it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import IO, Any

from tqdm import tqdm

DEFAULT_INTERVAL_S = 30.0


def is_terminal(stream: IO[str] | None = None) -> bool:
    stream = stream if stream is not None else sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class LineMeter:
    """``tqdm``'s ``update``/context-manager interface, writing a plain line at most every ``interval_s`` seconds
    (and always the first and the last update): ``desc: 120/1000 img | 4.1 img/s | elapsed 0:00:29 | ETA 0:03:34``."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0,
                 interval_s: float = DEFAULT_INTERVAL_S, stream: IO[str] | None = None) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.interval_s, self.stream = interval_s, stream
        self._initial, self._start = initial, time.monotonic()
        self._last: float | None = None

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        finished = self.total is not None and self.n >= self.total
        if self._last is None or finished or now - self._last >= self.interval_s:
            self._last = now
            self._write(now)

    def _write(self, now: float) -> None:
        elapsed = now - self._start
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.n}/{self.total if self.total is not None else '?'} {self.unit}",
                 f"{rate:.2f} {self.unit}/s", f"elapsed {duration(elapsed)}"]
        if self.total is not None and rate > 0:
            parts.append(f"ETA {duration(max(0, self.total - self.n) / rate)}")
        stream = self.stream if self.stream is not None else sys.stdout
        stream.write(" | ".join(parts) + "\n")
        stream.flush()

    def close(self) -> None:
        return None

    def __enter__(self) -> LineMeter:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def meter(total: int | None, desc: str, unit: str = "it", initial: int = 0, leave: bool = True) -> tqdm | LineMeter:
    """A tqdm bar on a terminal, a ``LineMeter`` otherwise; use as ``with meter(...) as m: m.update(k)``."""
    if is_terminal():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave)
    return LineMeter(total, desc, unit, initial)


def metered(items: Iterable[Any], total: int | None, desc: str, unit: str = "it") -> Iterator[Any]:
    """``items``, advancing a ``meter`` by one for each."""
    with meter(total, desc, unit) as progress:
        for item in items:
            yield item
            progress.update(1)

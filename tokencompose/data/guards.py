"""Bookkeeping that keeps a shard stream honest: rate-limited skip logging, and the proof that no sample can
be produced (so an endless pass over bad shards stops with one error instead of spinning)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

log = logging.getLogger("tokencompose.data.stream")
LOGGED_PER_REASON = 3  # skips of one reason logged in full per pass and worker; the rest are only counted
SHOWN = 3

# Where to look when every sample is rejected for one reason.
HINTS = {
    "sequence too long": "model.max_length is below the expanded length (visual tokens + text)",
    "no target after truncation": "model.max_length leaves no answer token after the visual tokens and prompt",
    "unreadable shard": "the shard paths (data.*) or the pipe: command",
    "missing object masks": "the model has object tokens: use shards written by `tokencompose annotate`",
    "missing object embeddings": "the model reads MaskInversion embeddings: use shards written by `tokencompose annotate`",
    "embedding width mismatch": "the shards were annotated with a different encoder than model.encoder",
}


class NoSamples(RuntimeError):
    """The configured shards cannot give a single usable sample."""


def no_samples_error(urls: list[str], skipped: Counter[str], what: str) -> NoSamples:
    shards = ", ".join(urls[:SHOWN]) + (f" and {len(urls) - SHOWN} more" if len(urls) > SHOWN else "")
    reasons = ", ".join(f"{reason}: {n}" for reason, n in skipped.most_common()) or "none recorded"
    message = f"no usable sample: {what} ({len(urls)} shard(s): {shards}). Bad samples by reason: {reasons}."
    if skipped:
        top = skipped.most_common(1)[0][0]
        if top in HINTS:
            message += f" Check: {HINTS[top]}."
    return NoSamples(message)


class SkipLog:
    """Counts bad samples by reason; logs the first few of each reason with shard and key, then says once
    that the rest are only counted (the loader logs the totals at the end of the pass)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.events: Counter[str] = Counter()

    def add(self, reason: str, url: object, key: object, detail: object, samples: int = 1) -> None:
        self.counts[reason] += samples
        self.events[reason] += 1
        if self.events[reason] <= LOGGED_PER_REASON:
            log.warning("skipped %s in %s (%s): %s", key, url, reason, detail)
        elif self.events[reason] == LOGGED_PER_REASON + 1:
            log.warning("more '%s' in this pass are counted, not logged; totals at the end of the pass", reason)


@dataclass
class _Read:
    url: str
    pending: int = 0  # raw samples handed on, not yet processed
    done: bool = False
    usable: bool = False


class UsableGuard:
    """Proves that no shard can give a usable sample: since the last usable sample, every shard has been read
    whole and every raw sample of that read was rejected. Reads are followed by id because a shuffle buffer
    sits between reading and processing."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = set(urls)
        self.dead: set[str] = set()
        self.reads: dict[int, _Read] = {}
        self.next_id = 0

    def begin(self, url: str) -> int:
        self.next_id += 1
        self.reads[self.next_id] = _Read(url)
        return self.next_id

    def handed(self, read: int) -> None:
        self.reads[read].pending += 1

    def end(self, read: int) -> bool:
        """The read is over; True when this proves no shard can give a sample."""
        self.reads[read].done = True
        return self._settle(read)

    def processed(self, read: int | None, usable: bool) -> bool:
        """A raw sample of ``read`` (None: an unwatched read) was processed; True as for ``end``."""
        if usable:
            self.dead.clear()
        state = self.reads.get(read) if read is not None else None
        if state is None:
            return False
        state.usable |= usable
        state.pending -= 1
        return self._settle(read)

    def _settle(self, read: int) -> bool:
        state = self.reads[read]
        if not state.done or state.pending:
            return False
        del self.reads[read]
        if not state.usable:
            self.dead.add(state.url)
        return self.dead >= self.urls

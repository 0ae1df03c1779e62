"""A stream of processed samples from WebDataset shards, for one rank and one loader worker.

Modes:
- ``exact``: shards are split over ranks x workers, so each sample is seen exactly once per epoch across the
  whole job (evaluation; training in one process). Ranks may get different numbers of batches.
- ``exact`` with ``even_ranks`` over several ranks (training): the epoch's shard order, seen as one run of
  samples (counts from the manifests), is cut into equal blocks of ``batches_per_rank`` batches per rank, so
  every rank runs the same number of steps and stays on the same epoch. The last block wraps around to the
  start (fewer than ranks x batch samples are seen twice); samples a block loses to bad data are topped up
  from whole shards in seeded order.
- ``resampled``: every (rank, worker) reads all shards in a seeded order, reshuffled after each full cycle,
  for a fixed number of batches per rank (training): ranks never wait on each other, whatever the shards.

All shuffle (if asked) with a seeded buffer, can group batches by modality and length, skip and count bad
samples by reason (the first few logged with shard and key), and resume a pass after any number of batches
exactly. Every loop over shards is bounded: when every shard has been read whole without one usable sample,
the stream raises ``NoSamples`` naming the shards and the bad-sample counts.
"""

from __future__ import annotations

import bisect
import itertools
import multiprocessing
import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tokencompose.data.guards import NoSamples, SkipLog, UsableGuard, log, no_samples_error
from tokencompose.data.processing import ProcessedSample
from tokencompose.data.reader import ShardProblem, read_shard
from tokencompose.data.shards import decode_sample

Mode = Literal["exact", "resampled"]
READ = "__read__"  # tags a raw sample with the guarded read it came from


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def buffer_shuffle(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Shuffle a stream with a buffer of ``size`` items (deterministic for a given ``rng``)."""
    buffer: list[Any] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            yield buffer.pop(rng.randrange(len(buffer)))
    rng.shuffle(buffer)
    yield from buffer


def group_batches(samples: Iterator[ProcessedSample], batch_size: int, window: int, rng: random.Random) -> Iterator[ProcessedSample]:
    """Reorder so that each run of ``batch_size`` samples has one modality and similar lengths (LLaVA's
    ``group_by_modality_length``): windows of samples are split by modality, sorted by length, cut into
    full batches and emitted in random order; leftovers carry over to the next window."""
    pending: list[ProcessedSample] = []
    for sample in samples:
        pending.append(sample)
        if len(pending) >= window:
            batches, pending = _full_batches(pending, batch_size)
            rng.shuffle(batches)
            yield from itertools.chain.from_iterable(batches)
    batches, pending = _full_batches(pending, batch_size)
    yield from itertools.chain.from_iterable(batches)
    yield from pending


def _full_batches(samples: list[ProcessedSample], batch_size: int) -> tuple[list[list[ProcessedSample]], list[ProcessedSample]]:
    batches, rest = [], []
    for has_image in (True, False):
        group = sorted((s for s in samples if s.has_image == has_image), key=lambda s: len(s.input_ids))
        cut = len(group) - len(group) % batch_size
        batches += [group[i : i + batch_size] for i in range(0, cut, batch_size)]
        rest += group[cut:]
    return batches, rest


def block_segments(order: list[str], counts: dict[str, int], start: int, length: int) -> list[tuple[str, int, int]]:
    """Positions ``[start, start + length)`` of the samples of ``order`` laid end to end (wrapping around)
    -> (shard, first, stop) sample ranges."""
    shards = [url for url in order if counts[url] > 0]
    begins = list(itertools.accumulate((counts[url] for url in shards), initial=0))
    total = begins[-1]
    segments: list[tuple[str, int, int]] = []
    if total == 0:
        return segments
    position, remaining = start % total, length
    while remaining > 0:  # each turn takes at least one sample
        i = bisect.bisect_right(begins, position) - 1
        first = position - begins[i]
        take = min(counts[shards[i]] - first, remaining)
        segments.append((shards[i], first, first + take))
        remaining -= take
        position = (position + take) % total
    return segments


class ShardStream(IterableDataset):
    """Processed samples from ``urls`` for the current rank and loader worker.

    ``epoch`` seeds shard order and shuffling; ``skip_batches`` resumes a pass after that many batches (of
    ``batch_size``, counted over all workers as the DataLoader interleaves them: exact while every worker is
    still producing at that point, which fixed-length passes guarantee). ``batches_per_rank`` is the pass
    length of ``resampled`` and ``even_ranks`` passes. ``counts`` (samples per shard, from manifests) say how
    many samples a truncated shard lost, and place ``even_ranks`` blocks. ``skipped`` counts bad samples by
    reason in the current pass (per worker process).
    """

    def __init__(
        self,
        urls: list[str],
        processor: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        batch_size: int,
        shuffle: bool,
        mode: Mode = "exact",
        batches_per_rank: int | None = None,
        seed: int = 0,
        buffer_size: int = 256,
        group_by_modality_length: bool = False,
        counts: dict[str, int] | None = None,
        even_ranks: bool = False,
    ) -> None:
        super().__init__()
        if not urls:
            raise ValueError("ShardStream: no shards given")
        if batch_size < 1 or buffer_size < 1:
            raise ValueError(f"ShardStream: batch_size={batch_size}, buffer_size={buffer_size}; both must be >= 1")
        if (mode == "resampled" or even_ranks) and (batches_per_rank is None or batches_per_rank < 1):
            raise ValueError(f"ShardStream: mode={mode!r}, even_ranks={even_ranks} needs batches_per_rank >= 1, "
                             f"got {batches_per_rank}")
        if even_ranks and any(url not in (counts or {}) for url in urls):
            raise ValueError("ShardStream: even_ranks needs the sample count of every shard (`counts`)")
        self.urls = list(urls)
        self.processor = processor
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.mode = mode
        self.batches_per_rank = batches_per_rank
        self.seed = seed
        self.buffer_size = buffer_size
        self.group_by_modality_length = group_by_modality_length
        self.counts = dict(counts or {})
        self.even_ranks = even_ranks
        self.epoch = 0
        self.skip_batches = 0
        self._log = SkipLog()
        self.reports: Any = None  # a queue for (worker, skipped counts) at the end of each pass

    @property
    def skipped(self) -> Counter[str]:
        return self._log.counts

    def fixed_length(self) -> bool:
        return self.mode == "resampled" or (self.even_ranks and rank_and_world()[1] > 1)

    def __len__(self) -> int:
        """Samples per rank and pass (fixed-length passes only; an exact pass's length depends on the shards)."""
        if not self.fixed_length():
            raise TypeError("an exact-mode ShardStream has no fixed length")
        return self.batches_per_rank * self.batch_size

    def rank_shards(self) -> list[str]:
        """The shards this rank reads in an exact pass (all of them for fixed-length passes)."""
        rank, world = rank_and_world()
        return self.urls if self.fixed_length() else self._ordered()[rank::world]

    def _ordered(self) -> list[str]:
        shards = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(shards)
        return shards

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # Read the settings now, not when the generator first runs, so the loader can reset them right after.
        rank, world = rank_and_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader takes batches from workers in turn, always starting at worker 0. After skipping k
        # batches the next one is due from share k mod W, so physical worker w plays share (w + k) mod W.
        share = (worker + self.skip_batches) % workers
        seed = f"{self.seed}-{self.epoch}-{rank}-{share}"
        self._log = SkipLog()
        guard = UsableGuard(self.urls)
        limit = None
        if self.fixed_length():
            quotas = [len(range(s, self.batches_per_rank, workers)) for s in range(workers)]
            limit = quotas[share] * self.batch_size
            parts = [self._cycles(random.Random(seed), guard)]
            if self.mode != "resampled":  # this share's block first, shuffled within itself, then top-ups
                start = (rank * self.batches_per_rank + sum(quotas[:share])) * self.batch_size
                block = block_segments(self._ordered(), self.counts, start, limit) if limit else []
                parts.insert(0, itertools.chain.from_iterable(self._read(*s) for s in block))
        else:
            parts = [itertools.chain.from_iterable(self._read(url) for url in self._ordered()[rank::world][share::workers])]
        skip = len(range(share, self.skip_batches, workers)) * self.batch_size
        return self._samples(parts, random.Random(seed + "-order"), skip, limit, worker, self.reports, guard)

    def _cycles(self, rng: random.Random, guard: UsableGuard) -> Iterator[dict[str, Any]]:
        while True:  # bounded: the pass's sample limit stops it, or the guard proves no shard gives a sample
            order = list(self.urls)
            rng.shuffle(order)
            for url in order:
                read = guard.begin(url)
                for raw in self._read(url):
                    guard.handed(read)
                    raw[READ] = read
                    yield raw
                if guard.end(read):
                    raise self._no_samples()

    def _read(self, url: str, first: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """Raw samples ``[first, stop)`` of one shard; its problems are counted with the samples they lost."""
        end = stop if stop is not None else self.counts.get(url)
        ended_early = False

        def problem(found: ShardProblem) -> None:
            nonlocal ended_early
            ended_early |= found.fatal
            lost = (None if end is None else max(0, end - max(found.position, first))) if found.fatal else 1
            said = f"{lost} sample(s) lost" if lost is not None else "samples lost: unknown (no manifest count)"
            self._log.add(found.reason, url, "-", f"{found.detail}; {found.position} read before; {said}",
                          samples=1 if lost is None else lost)

        read = 0
        for raw in read_shard(url, problem):
            read += 1
            if read > first:
                yield raw
            if stop is not None and read >= stop:
                return
        if end is not None and read < end and not ended_early:
            self._log.add("fewer samples than manifest", url, "-", f"read {read}, expected {end}", end - max(read, first))

    def _processed(self, raw: Iterator[dict[str, Any]], guard: UsableGuard) -> Iterator[dict[str, Any]]:
        for sample in raw:
            read = sample.pop(READ, None)
            try:
                out = self.processor(decode_sample(sample))
            except Exception as error:  # noqa: BLE001 - a bad sample must never stop training
                self._log.add(getattr(error, "reason", f"error: {type(error).__name__}"), sample.get("__url__"),
                              sample.get("__key__"), error)
                out = None
            if guard.processed(read, usable=out is not None):
                raise self._no_samples()
            if out is not None:
                yield out

    def _no_samples(self) -> NoSamples:
        return no_samples_error(self.urls, self.skipped, "every shard was read whole without a usable sample")

    def _samples(self, parts: list[Iterator[dict[str, Any]]], rng: random.Random, skip: int, limit: int | None,
                 worker: int, reports: Any, guard: UsableGuard) -> Iterator[dict[str, Any]]:
        if self.shuffle:  # each part shuffled on its own, so an even_ranks block is read whole before top-ups
            parts = [buffer_shuffle(part, self.buffer_size, rng) for part in parts]
        samples = self._processed(itertools.chain.from_iterable(parts), guard)
        if self.group_by_modality_length:
            samples = group_batches(samples, self.batch_size, self.batch_size * 16, rng)
        for produced, sample in enumerate(itertools.islice(samples, limit), start=1):
            if produced > skip:
                yield sample
        if reports is not None:
            reports.put((worker, dict(self.skipped)))


class EpochLoader(DataLoader):
    """A DataLoader over a ``ShardStream`` that starts each pass with the next epoch's shuffle; the first pass
    can resume mid-epoch (``resume(epoch, batches)``). Bad-sample totals of each pass are logged at its end
    (one line) and kept in ``skipped``. A whole pass without a batch, on a rank that has shards, raises
    ``NoSamples``.

    It is resumable as Lightning expects of a loader (``state_dict`` / ``load_state_dict``, kept in the
    checkpoint by the fit loop): the state is ``position()`` — the epoch and how many of its batches were trained
    on, which the data module reads from the trainer (the loader itself cannot count them: the trainer fetches
    ahead).
    """

    def __init__(self, dataset: ShardStream, position: Callable[[], tuple[int, int]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=dataset.batch_size, **kwargs)
        self.next_epoch = 0
        self.pending_skip = 0
        self.skipped: Counter[str] = Counter()
        self.position = position

    def resume(self, epoch: int, batches: int) -> None:
        self.next_epoch, self.pending_skip = epoch, batches

    def state_dict(self) -> dict[str, int]:
        if self.position is None:
            return {}
        epoch, batches = self.position()
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state:
            self.resume(int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Any:
        stream: ShardStream = self.dataset
        stream.epoch, stream.skip_batches = self.next_epoch, self.pending_skip
        context = self.multiprocessing_context or multiprocessing.get_context()
        stream.reports = reports = context.SimpleQueue()
        iterator = super().__iter__()  # workers copy the stream here, with this pass's settings
        stream.reports = None
        epoch, resumed = self.next_epoch, self.pending_skip
        has_shards = bool(stream.rank_shards())
        self.next_epoch, self.pending_skip = self.next_epoch + 1, 0
        return self._counting(iterator, epoch, reports, has_shards and not resumed)

    def _counting(self, iterator: Any, epoch: int, reports: Any, expect_batches: bool) -> Iterator[Any]:
        batches = 0
        for batch in iterator:
            batches += 1
            yield batch
        self.skipped = Counter()
        while not reports.empty():  # every worker reported before the loader finished
            _, counts = reports.get()
            self.skipped.update(counts)
        if self.skipped:
            log.warning("epoch %d: skipped %d bad samples: %s", epoch, sum(self.skipped.values()), dict(self.skipped))
        if batches == 0 and expect_batches:
            stream: ShardStream = self.dataset
            raise no_samples_error(stream.rank_shards(), self.skipped, f"an exact pass over this rank's shards gave no batch (epoch {epoch})")

"""A stream of processed samples from WebDataset shards, for one rank and one loader worker.

Two modes:
- ``exact``: shards are split over ranks x workers, so each sample is seen exactly once per epoch across the
  whole job (evaluation). Ranks may get different numbers of batches.
- ``resampled``: every (rank, worker) draws shards with replacement from all of them, seeded by epoch, and
  yields a fixed number of batches per rank (training): ranks never wait on each other, whatever the shards.

Both shuffle (if asked) with a seeded buffer, can group batches by modality and length, skip and count bad
samples by reason (logged with shard and key), and resume a pass after any number of batches exactly.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tokencompose.data.shards import decode_sample, iterate_shard

log = logging.getLogger(__name__)
Mode = Literal["exact", "resampled"]


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


def group_batches(samples: Iterator[dict[str, Any]], batch_size: int, window: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    """Reorder so that each run of ``batch_size`` samples has one modality and similar lengths (LLaVA's
    ``group_by_modality_length``): windows of samples are split by modality, sorted by length, cut into
    full batches and emitted in random order; leftovers carry over to the next window."""
    pending: list[dict[str, Any]] = []
    for sample in samples:
        pending.append(sample)
        if len(pending) >= window:
            batches, pending = _full_batches(pending, batch_size)
            rng.shuffle(batches)
            yield from itertools.chain.from_iterable(batches)
    batches, pending = _full_batches(pending, batch_size)
    yield from itertools.chain.from_iterable(batches)
    yield from pending


def _full_batches(samples: list[dict[str, Any]], batch_size: int) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    batches, rest = [], []
    for has_image in (True, False):
        group = sorted((s for s in samples if s["has_image"] == has_image),
                       key=lambda s: len(s["input_ids"]))
        cut = len(group) - len(group) % batch_size
        batches += [group[i : i + batch_size] for i in range(0, cut, batch_size)]
        rest += group[cut:]
    return batches, rest


class ShardStream(IterableDataset):
    """Processed samples from ``urls`` for the current rank and loader worker.

    ``epoch`` seeds shard order and shuffling; ``skip_batches`` resumes a pass after that many batches (of
    ``batch_size``, counted over all workers as the DataLoader interleaves them: exact while every worker is
    still producing at that point, which ``resampled`` mode guarantees). In ``resampled`` mode
    ``batches_per_rank`` is the pass length. ``skipped`` counts bad samples by reason (per worker process).
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
    ) -> None:
        super().__init__()
        if not urls:
            raise ValueError("ShardStream: no shards given")
        if mode == "resampled" and not batches_per_rank:
            raise ValueError("ShardStream: mode='resampled' needs batches_per_rank")
        self.urls = list(urls)
        self.processor = processor
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.mode = mode
        self.batches_per_rank = batches_per_rank
        self.seed = seed
        self.buffer_size = buffer_size
        self.group_by_modality_length = group_by_modality_length
        self.epoch = 0
        self.skip_batches = 0
        self.skipped: Counter[str] = Counter()
        self.reports: Any = None  # a queue for (worker, skipped counts) at the end of each pass

    def __len__(self) -> int:
        """Samples per rank and pass (resampled mode only; exact mode's length depends on the shards)."""
        if self.mode != "resampled":
            raise TypeError("an exact-mode ShardStream has no fixed length")
        return self.batches_per_rank * self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # Read the settings now, not when the generator first runs, so the loader can reset them right after.
        rank, world = rank_and_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader takes batches from workers in turn, always starting at worker 0. After skipping k
        # batches the next one is due from share k mod W, so physical worker w plays share (w + k) mod W.
        share = (worker + self.skip_batches) % workers
        seed = f"{self.seed}-{self.epoch}-{rank}-{share}"
        if self.mode == "resampled":
            my_batches = len(range(share, self.batches_per_rank, workers))
            raw = self._resampled_shards(random.Random(seed))
            limit = my_batches * self.batch_size
        else:
            shards = list(self.urls)
            if self.shuffle:
                random.Random(f"{self.seed}-{self.epoch}").shuffle(shards)
            raw = self._shards(shards[rank::world][share::workers])
            limit = None
        skip = len(range(share, self.skip_batches, workers)) * self.batch_size
        return self._samples(raw, random.Random(seed + "-order"), skip, limit, worker, self.reports)

    def _resampled_shards(self, rng: random.Random) -> Iterator[dict[str, Any]]:
        while True:
            yield from self._shards([rng.choice(self.urls)])

    def _shards(self, shards: list[str]) -> Iterator[dict[str, Any]]:
        for url in shards:
            try:
                yield from iterate_shard(url)
            except Exception as error:  # noqa: BLE001 - a truncated or unreadable shard ends early, never fatally
                self._skip("unreadable shard", url, "-", error)

    def _processed(self, raw: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for sample in raw:
            try:
                yield self.processor(decode_sample(sample))
            except Exception as error:  # noqa: BLE001 - a bad sample must never stop training
                self._skip(getattr(error, "reason", f"error: {type(error).__name__}"), sample.get("__url__"),
                           sample.get("__key__"), error)

    def _skip(self, reason: str, url: Any, key: Any, error: Exception) -> None:
        self.skipped[reason] += 1
        log.warning("skipped %s in %s (%s): %s", key, url, reason, error)

    def _samples(self, raw: Iterator[dict[str, Any]], rng: random.Random, skip: int, limit: int | None,
                 worker: int, reports: Any) -> Iterator[dict[str, Any]]:
        if self.shuffle:
            raw = buffer_shuffle(raw, self.buffer_size, rng)
        samples = self._processed(raw)
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
    and kept in ``skipped``."""

    def __init__(self, dataset: ShardStream, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=dataset.batch_size, **kwargs)
        self.next_epoch = 0
        self.pending_skip = 0
        self.skipped: Counter[str] = Counter()

    def resume(self, epoch: int, batches: int) -> None:
        self.next_epoch, self.pending_skip = epoch, batches

    def __iter__(self) -> Any:
        stream: ShardStream = self.dataset
        stream.epoch, stream.skip_batches = self.next_epoch, self.pending_skip
        context = self.multiprocessing_context or multiprocessing.get_context()
        stream.reports = reports = context.SimpleQueue()
        iterator = super().__iter__()  # workers copy the stream here, with this pass's settings
        stream.reports = None
        epoch = self.next_epoch
        self.next_epoch, self.pending_skip = self.next_epoch + 1, 0
        return self._counting(iterator, epoch, reports)

    def _counting(self, iterator: Any, epoch: int, reports: Any) -> Iterator[Any]:
        yield from iterator
        self.skipped = Counter()
        while not reports.empty():  # every worker reported before the loader finished
            _, counts = reports.get()
            self.skipped.update(counts)
        if self.skipped:
            log.warning("epoch %d: skipped %d bad samples: %s", epoch, sum(self.skipped.values()), dict(self.skipped))

"""A stream of processed samples from WebDataset shards: seeded per-epoch shuffle, rank/worker split, resume."""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tokencompose.data.shards import decode_sample, iterate_shard

log = logging.getLogger(__name__)


def _rank_and_world() -> tuple[int, int]:
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


class ShardStream(IterableDataset):
    """Processed samples from ``urls``; each (rank, worker) reads its own share of the shards.

    ``epoch`` seeds the shard order and the sample buffer; ``skip_batches`` resumes a pass after that many
    batches (of ``batch_size``, counted over all workers as the DataLoader interleaves them). Exact while every
    worker is still producing at the resume point (workers hold equal shares of batches up to there). Samples that fail
    to decode or process are skipped, logged with shard and key, and counted in ``skipped``.
    """

    def __init__(
        self,
        urls: list[str],
        processor: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        buffer_size: int = 256,
    ) -> None:
        super().__init__()
        if not urls:
            raise ValueError("ShardStream: no shards given")
        self.urls = list(urls)
        self.processor = processor
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_size = buffer_size
        self.epoch = 0
        self.skip_batches = 0
        self.skipped: Counter[str] = Counter()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # Read the settings now, not when the generator first runs, so the loader can reset them right after.
        rank, world = _rank_and_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(shards)
        # The DataLoader takes batches from workers in turn, always starting at worker 0. After skipping k
        # batches the next one is due from share k mod W, so physical worker w plays share (w + k) mod W.
        share = (worker + self.skip_batches) % workers
        shards = shards[rank::world][share::workers]
        my_skipped_batches = len(range(share, self.skip_batches, workers))
        rng = random.Random(f"{self.seed}-{self.epoch}-{rank}-{share}")
        return self._samples(shards, my_skipped_batches * self.batch_size, rng)

    def _samples(self, shards: list[str], skip: int, rng: random.Random) -> Iterator[dict[str, Any]]:
        raw = itertools.chain.from_iterable(iterate_shard(url) for url in shards)
        if self.shuffle:
            raw = buffer_shuffle(raw, self.buffer_size, rng)
        produced = 0
        for sample in raw:
            try:
                processed = self.processor(decode_sample(sample))
            except Exception as error:  # a bad sample must never stop training
                reason = type(error).__name__
                self.skipped[reason] += 1
                log.warning("skipped sample %s from %s: %s: %s", sample.get("__key__"), sample.get("__url__"), reason, error)
                continue
            produced += 1
            if produced > skip:
                yield processed


class EpochLoader(DataLoader):
    """A DataLoader over a ``ShardStream`` that starts each pass with the next epoch's shuffle; the first pass
    can resume mid-epoch (``resume(epoch, batches)``)."""

    def __init__(self, dataset: ShardStream, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=dataset.batch_size, **kwargs)
        self.next_epoch = 0
        self.pending_skip = 0

    def resume(self, epoch: int, batches: int) -> None:
        self.next_epoch, self.pending_skip = epoch, batches

    def __iter__(self) -> Any:
        stream: ShardStream = self.dataset
        stream.epoch, stream.skip_batches = self.next_epoch, self.pending_skip
        iterator = super().__iter__()  # workers copy the stream here, with this pass's settings
        self.next_epoch, self.pending_skip = self.next_epoch + 1, 0
        return iterator

"""The LightningDataModule: WebDataset shards in, ``VLMBatch`` out, with the built-in synthetic data."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from tokencompose.data.guards import no_samples_error
from tokencompose.data.processing import SampleProcessor
from tokencompose.data.shards import MASKS_KEY, encode_png, pack_masks, write_shard
from tokencompose.data.sources import Shards, resolve_shards
from tokencompose.data.stream import EpochLoader, Mode, ShardStream
from tokencompose.data.synthetic import ShapesGenerator, shapes_text_tokenizer
from tokencompose.data.transform import DataTransform

log = logging.getLogger(__name__)


SYNTHETIC_FORMAT = 2  # bump when the shard layout changes; older shards are then rewritten


@dataclass
class SyntheticShapes:
    """Where and how much synthetic data to generate (``prepare_data`` writes it when missing)."""

    root: str = "data/synthetic"
    train_samples: int = 2000
    val_samples: int = 200
    samples_per_shard: int = 500
    image_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [f"{name}={getattr(self, name)} (must be >= {low})"
                    for name, low in (("train_samples", 1), ("val_samples", 1), ("samples_per_shard", 1), ("image_size", 16))
                    if not isinstance(getattr(self, name), int) or getattr(self, name) < low]
        if problems:
            raise ValueError(f"data.synthetic: {', '.join(problems)}")

    def split_urls(self, split: str) -> list[str]:
        return list(self.split_counts(split))

    def split_counts(self, split: str) -> dict[str, int]:
        """Shard path -> samples, for ``train`` or ``val``."""
        count = self.train_samples if split == "train" else self.val_samples
        shards = -(-count // self.samples_per_shard)
        return {str(Path(self.root) / f"{split}-{i:06d}.tar"): min(self.samples_per_shard, count - i * self.samples_per_shard)
                for i in range(shards)}

    def write(self) -> None:
        """Write any missing shard (atomically) and the text tokenizer; finished shards are left alone.

        Shards written by an older format of this generator (manifest ``format``) are rewritten.
        """
        root = Path(self.root)
        manifest = root / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text()).get("format") != SYNTHETIC_FORMAT:
            for stale in root.glob("*.tar"):
                stale.unlink()
        for split, count, seed in (("train", self.train_samples, self.seed), ("val", self.val_samples, self.seed + 1)):
            generator = ShapesGenerator(image_size=self.image_size, seed=seed)
            for shard_index, url in enumerate(self.split_urls(split)):
                if Path(url).exists():
                    continue
                start = shard_index * self.samples_per_shard
                indices = range(start, min(count, start + self.samples_per_shard))
                write_shard(Path(url), (self._encode(generator, i) for i in indices))
                log.info("wrote %s", url)
        tokenizer_dir = root / "text_tokenizer"
        if not (tokenizer_dir / "tokenizer.json").exists():
            shapes_text_tokenizer().save_pretrained(tokenizer_dir)
        manifest.write_text(json.dumps({"format": SYNTHETIC_FORMAT, "train": self.train_samples, "val": self.val_samples}))

    @staticmethod
    def _encode(generator: ShapesGenerator, index: int) -> dict[str, Any]:
        sample = generator(index)
        return {
            "__key__": sample.key,
            "png": encode_png(sample.image),
            "json": json.dumps(generator.to_record(sample)).encode(),
            MASKS_KEY: pack_masks(sample.masks),
        }


def _urls(spec: str | list[str] | None, key: str = "shards") -> list[str]:
    """Shard URLs of a spec (paths with brace ranges, globs, converted directories, ``pipe:``, URLs)."""
    return resolve_shards(spec, key).urls


def _at_least(values: dict[str, Any], low: int) -> list[str]:
    return [f"data.{name}={value!r} (must be an integer >= {low})" for name, value in values.items()
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low)]


class ShardDataModule(L.LightningDataModule):
    """Streams WebDataset shards for a ``VLM``.

    Args:
        train, val, predict: shard specs — paths with brace ranges, globs, a directory written by
            ``tokencompose data convert-llava`` (its ``manifest.json`` lists the shards and their samples),
            ``pipe:`` commands, URLs — or lists of them. Local shards must exist.
        synthetic: generate the built-in shapes data and use its shards for any split not given.
        batch_size: per device. num_workers: loader processes. seed: shuffling seed (train only).
        shuffle_buffer: samples held for shuffling.
        train_mode: ``resampled`` (fixed batches per rank; ranks never wait on each other) or ``exact``
            (every sample once per epoch; over several ranks every rank runs ceil(samples / (ranks x batch))
            batches, the last block wrapping around, which needs sample counts). Evaluation is always exact.
        train_batches_per_epoch: per rank, for ``resampled``; default: samples / (world size x batch size),
            the samples of the training shards (synthetic settings or manifests).
        group_by_modality_length: batches of one modality (image or text-only) and similar length.

        transform: what the model needs done to each sample (``VLM.data_transform()``: image size and
            normalisation, text tokenizer, template and token budgets, what stored annotations must bring).
            The command line links it from the model; in Python pass it, or ``setup`` asks the trainer's model.
    """

    def __init__(
        self,
        train: str | list[str] | None = None,
        val: str | list[str] | None = None,
        predict: str | list[str] | None = None,
        synthetic: SyntheticShapes | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        shuffle_buffer: int = 256,
        train_mode: Mode = "resampled",
        train_batches_per_epoch: int | None = None,
        group_by_modality_length: bool = False,
        transform: DataTransform | None = None,
    ) -> None:
        super().__init__()
        problems = _at_least({"batch_size": batch_size, "shuffle_buffer": shuffle_buffer,
                              "train_batches_per_epoch": train_batches_per_epoch}, 1)
        problems += _at_least({"num_workers": num_workers}, 0)
        if train_mode not in ("resampled", "exact"):
            problems.append(f"data.train_mode={train_mode!r} (allowed: 'resampled', 'exact')")
        elif train_mode == "exact" and train_batches_per_epoch is not None:
            problems.append("data.train_batches_per_epoch is for train_mode 'resampled'; an exact epoch is every sample")
        if problems:
            raise ValueError(f"ShardDataModule: {'; '.join(problems)}")
        self.synthetic = synthetic
        self.specs = {"train": train, "val": val, "predict": predict}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.train_mode = train_mode
        self.train_batches_per_epoch = train_batches_per_epoch
        self.group_by_modality_length = group_by_modality_length
        self.transform = transform
        self._shards: dict[str, Shards] = {}
        self._train_loader: EpochLoader | None = None
        self._resume: tuple[int, int] | None = None

    def shards(self, split: str) -> Shards:
        """The split's shards (resolved, and checked to exist, on first use: synthetic ones are written by
        ``prepare_data``): the spec given, else the synthetic data's, else none."""
        if split not in self._shards:
            spec = self.specs[split]
            if spec is None and self.synthetic is not None:
                counts = self.synthetic.split_counts("train" if split == "train" else "val")
                resolve_shards(list(counts), "data.synthetic")  # written by prepare_data: fail here if not
                self._shards[split] = Shards(list(counts), counts)
            else:
                self._shards[split] = resolve_shards(spec, f"data.{split}")
        return self._shards[split]

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            self.synthetic.write()

    @property
    def processor(self) -> SampleProcessor:
        """Per-sample processing for validation, test and prediction (the test-time budget)."""
        return self._transform().processor(training=False)

    @property
    def train_processor(self) -> SampleProcessor:
        """Per-sample processing for training (the training budget; every sample keeps an answer token)."""
        return self._transform().processor(training=True)

    def _transform(self) -> DataTransform:
        if self.transform is None:
            raise RuntimeError("ShardDataModule: no data transform; pass `transform=model.data_transform()` "
                               "(the command line links it from the model) or use it with a Trainer")
        return self.transform

    def setup(self, stage: str) -> None:
        if self.transform is None and self.trainer is not None and self.trainer.lightning_module is not None:
            self.transform = self.trainer.lightning_module.data_transform()
        self._transform()

    def _world(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    def batches_per_rank(self) -> int:
        """Epoch length per rank: ``train_batches_per_epoch``, else from the training shards' sample count
        (resampled: samples // (world x batch), at least 1; exact: ceil(samples / (world x batch)))."""
        if self.train_batches_per_epoch is not None:
            return self.train_batches_per_epoch
        shards = self.shards("train")
        samples = shards.samples
        if samples is None:
            unknown = [url for url in shards.urls if url not in shards.counts]
            raise ValueError(
                f"ShardDataModule: the sample count of {len(unknown)} training shard(s) is unknown (e.g. {unknown[0]}: "
                "no manifest.json lists it); name a converted directory in `data.train`, or set "
                "`data.train_batches_per_epoch`" + ("" if self.train_mode == "resampled" else " and use train_mode 'resampled'")
            )
        if samples == 0:
            raise no_samples_error(shards.urls, Counter(), "the manifests of the training shards list 0 samples")
        per_step = self._world() * self.batch_size
        return max(1, samples // per_step) if self.train_mode == "resampled" else math.ceil(samples / per_step)

    def _loader(self, split: str, shuffle: bool, mode: Mode = "exact") -> EpochLoader:
        shards = self.shards(split)
        if not shards.urls:
            raise ValueError(f"ShardDataModule: no shards for split {split!r}; set `data.{split}` or `data.synthetic`")
        training = split == "train"
        even = training and mode == "exact" and self._world() > 1
        stream = ShardStream(
            shards.urls, self.train_processor if training else self.processor, batch_size=self.batch_size,
            shuffle=shuffle, seed=self.seed, buffer_size=self.shuffle_buffer, mode=mode,
            batches_per_rank=self.batches_per_rank() if mode == "resampled" or even else None,
            group_by_modality_length=self.group_by_modality_length and training,
            counts=shards.counts, even_ranks=even,
        )
        position = self._position if training and self.trainer is not None else None
        return EpochLoader(stream, position, num_workers=self.num_workers, collate_fn=self._transform().collator())

    def _position(self) -> tuple[int, int]:
        """Where training is in the data: the epoch and how many of its batches were trained on."""
        return self.trainer.current_epoch, self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> EpochLoader:
        self._train_loader = self._loader("train", shuffle=True, mode=self.train_mode)
        if self._resume is not None:
            self._train_loader.resume(*self._resume)
            self._resume = None
        return self._train_loader

    def val_dataloader(self) -> EpochLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> EpochLoader:
        return self._loader("val", shuffle=False)

    def predict_dataloader(self) -> EpochLoader:
        return self._loader("predict", shuffle=False)

    # The data position is the training loader's state (``EpochLoader.state_dict``, saved by Lightning's fit loop).
    # Checkpoints written before kept it here, under the data module's name: they still resume exactly.
    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self._resume = (int(state["epoch"]), int(state["batches"]))

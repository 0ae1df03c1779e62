"""The LightningDataModule: WebDataset shards in, ``VLMBatch`` out, with the built-in synthetic data."""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from webdataset.shardlists import expand_urls

from tokencompose.data.processing import Collator, ImageTransform, SampleProcessor
from tokencompose.data.shards import MASKS_KEY, encode_png, pack_masks, write_shard
from tokencompose.data.stream import EpochLoader, Mode, ShardStream
from tokencompose.data.synthetic import ShapesGenerator, shapes_text_tokenizer

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

    def split_urls(self, split: str) -> list[str]:
        count = self.train_samples if split == "train" else self.val_samples
        shards = max(1, -(-count // self.samples_per_shard))
        return [str(Path(self.root) / f"{split}-{i:06d}.tar") for i in range(shards)]

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


def _urls(spec: str | list[str] | None) -> list[str]:
    if spec is None:
        return []
    specs = [spec] if isinstance(spec, str) else spec
    return [url for s in specs for url in expand_urls(s)]


def manifest_samples(urls: list[str]) -> int | None:
    """Total samples of ``urls`` from the converter's ``manifest.json`` next to them (local shards only)."""
    total = 0
    for folder, names in itertools.groupby(sorted(urls), key=lambda u: str(Path(u).parent)):
        manifest = Path(folder) / "manifest.json"
        if not manifest.is_file():
            return None
        shards = json.loads(manifest.read_text()).get("shards", {})
        for name in names:
            if Path(name).name not in shards:
                return None
            total += int(shards[Path(name).name]["samples"])
    return total


class ShardDataModule(L.LightningDataModule):
    """Streams WebDataset shards for a ``VLM``.

    Args:
        train, val, predict: shard specs (paths with brace ranges, ``pipe:`` commands, URLs), or lists of them.
        synthetic: generate the built-in shapes data and use its shards for any split not given.
        batch_size: per device. num_workers: loader processes. seed: shuffling seed (train only).
        shuffle_buffer: samples held for shuffling.
        train_mode: ``resampled`` (fixed batches per rank; ranks never wait on each other) or ``exact``
            (every sample once per epoch, ranks may differ in batch count). Evaluation is always exact.
        train_batches_per_epoch: per rank, for ``resampled``; default: samples / (world size x batch size),
            samples from the synthetic settings or the converter's ``manifest.json``.
        group_by_modality_length: batches of one modality (image or text-only) and similar length.

    The model supplies image size, normalisation, text tokenizer, template and token budget: ``setup`` reads
    them from the trainer's model, or call ``attach(model)`` to use the module on its own.
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
    ) -> None:
        super().__init__()
        self.synthetic = synthetic
        self.urls = {"train": _urls(train), "val": _urls(val), "predict": _urls(predict)}
        if synthetic is not None:
            for split, source in (("train", "train"), ("val", "val"), ("predict", "val")):
                self.urls[split] = self.urls[split] or synthetic.split_urls(source)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        if train_mode not in ("resampled", "exact"):
            raise ValueError(f"ShardDataModule: train_mode={train_mode!r}; allowed: 'resampled', 'exact'")
        self.train_mode = train_mode
        self.train_batches_per_epoch = train_batches_per_epoch
        self.group_by_modality_length = group_by_modality_length
        self.processor: SampleProcessor | None = None
        self.collator: Collator | None = None
        self._train_loader: EpochLoader | None = None
        self._resume: tuple[int, int] | None = None

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            self.synthetic.write()

    def attach(self, model: Any) -> None:
        """Take preprocessing and text encoding from a ``VLM``."""
        encoder = model.encoder
        self.processor = SampleProcessor(
            ImageTransform(encoder.image_size, encoder.image_mean, encoder.image_std), model.conversation_encoder()
        )
        self.collator = Collator(pad_token_id=model.llm.text_tokenizer.pad_token_id)

    def setup(self, stage: str) -> None:
        if self.trainer is not None and self.trainer.lightning_module is not None:
            self.attach(self.trainer.lightning_module)
        if self.processor is None:
            raise RuntimeError("ShardDataModule: no model attached; call `attach(model)` or use it with a Trainer")

    def batches_per_rank(self) -> int:
        """Resampled-mode epoch length per rank."""
        if self.train_batches_per_epoch is not None:
            return self.train_batches_per_epoch
        samples = self.synthetic.train_samples if self.synthetic is not None else manifest_samples(self.urls["train"])
        if samples is None:
            raise ValueError(
                "ShardDataModule: set `data.train_batches_per_epoch` (no manifest.json gives the sample count)"
            )
        world = self.trainer.world_size if self.trainer is not None else 1
        return max(1, samples // (world * self.batch_size))

    def _loader(self, split: str, shuffle: bool, mode: Mode = "exact") -> EpochLoader:
        urls = self.urls[split]
        if not urls:
            raise ValueError(f"ShardDataModule: no shards for split {split!r}; set `data.{split}` or `data.synthetic`")
        stream = ShardStream(
            urls, self.processor, batch_size=self.batch_size, shuffle=shuffle, seed=self.seed,
            buffer_size=self.shuffle_buffer, mode=mode,
            batches_per_rank=self.batches_per_rank() if mode == "resampled" else None,
            group_by_modality_length=self.group_by_modality_length and split == "train",
        )
        return EpochLoader(stream, num_workers=self.num_workers, collate_fn=self.collator)

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

    # Data position for exact resume: the epoch and how many of its batches were trained on.
    def state_dict(self) -> dict[str, Any]:
        if self.trainer is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "batches": progress.processed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self._resume = (int(state["epoch"]), int(state["batches"]))

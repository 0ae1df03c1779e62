"""``tokencompose predict`` keeps what it predicts: one JSON line per sample, written batch by batch."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import IO, Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

log = logging.getLogger(__name__)


class WritePredictions(BasePredictionWriter):
    """Every predicted sample as one JSON line — ``key``, ``question`` (the last question, without the image
    placeholder), ``prediction`` (the model's greedy answer), ``answer`` (the reference, ``""`` if the data has
    none), ``question_type``, ``visual_tokens`` (those the LLM saw), ``seconds`` (per sample) — flushed after
    each batch, so a crash keeps what was predicted. ``tokencompose predict`` adds it when no other prediction
    writer is configured.

    Args:
        path: the file; default ``predictions.jsonl`` in the run's log folder (``trainer.log_dir``: the
            logger's version folder, or ``trainer.default_root_dir`` without a logger). With several ranks each
            writes its own share to ``predictions.rank<R>.jsonl`` there.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self.file: IO[str] | None = None
        self.written_to: Path | None = None
        self.count = 0

    def _target(self, trainer: L.Trainer) -> Path:
        path = Path(self.path) if self.path else Path(trainer.log_dir or trainer.default_root_dir) / "predictions.jsonl"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.written_to, self.count = self._target(trainer), 0
        self.written_to.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.written_to.open("w")

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.file is None:
            return
        for record in prediction:
            self.file.write(json.dumps(record) + "\n")
        self.count += len(prediction)
        self.file.flush()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
            log.info("%d predictions written to %s", self.count, self.written_to)

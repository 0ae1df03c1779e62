"""A Lightning Trainer whose checkpoint loading defaults to ``weights_only=True`` (no pickle execution)."""

from __future__ import annotations

from typing import Any

import lightning as L


class Trainer(L.Trainer):
    """``lightning.Trainer`` with ``weights_only=True`` as the default when a checkpoint is loaded."""

    def fit(self, model: Any, train_dataloaders: Any = None, val_dataloaders: Any = None, datamodule: Any = None,
            ckpt_path: str | None = None, weights_only: bool | None = True) -> None:
        return super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, weights_only)

    def validate(self, model: Any = None, dataloaders: Any = None, ckpt_path: str | None = None, verbose: bool = True,
                 datamodule: Any = None, weights_only: bool | None = True) -> Any:
        return super().validate(model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    def test(self, model: Any = None, dataloaders: Any = None, ckpt_path: str | None = None, verbose: bool = True,
             datamodule: Any = None, weights_only: bool | None = True) -> Any:
        return super().test(model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    def predict(self, model: Any = None, dataloaders: Any = None, datamodule: Any = None,
                return_predictions: bool | None = None, ckpt_path: str | None = None,
                weights_only: bool | None = True) -> Any:
        return super().predict(model, dataloaders, datamodule, return_predictions, ckpt_path, weights_only)

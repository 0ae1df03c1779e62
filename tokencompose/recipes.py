"""Recipes: the LightningCLI parsers that read them, and ``load_recipe`` — recipe files + overrides -> a ``VLM``.

``load_recipe`` is the one way tools build a model from a recipe (``eval``, ``sweep``, the lmms-eval adapter,
notebooks): the same parser as ``tokencompose fit``, so the same files and overrides work, validated when the
recipe is read (before any image is predicted). It builds the model (and the data module linked to it), never a
trainer.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI

from tokencompose.data.datamodule import ShardDataModule
from tokencompose.model import VLM
from tokencompose.trainer import Trainer

# LightningCLI warns whenever ``args`` is given while ``sys.argv`` has arguments — which is how every
# ``tokencompose`` command runs it; the arguments it parses are the ones given, so the warning says nothing.
warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")


class _DefaultProgress:
    """Adds ``default_progress_bar()`` (a bar on a terminal, plain lines in a log file) to a LightningCLI's
    trainer unless the recipe names a progress bar or turns progress off."""

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        from tokencompose.callbacks import with_default_progress

        config = self._get(self.config_init, "trainer", default={})  # type: ignore[attr-defined]
        kwargs.setdefault("callbacks", with_default_progress(config.get("callbacks"), config.get("enable_progress_bar")))
        return super().instantiate_trainer(**kwargs)  # type: ignore[misc]


class TokenComposeCLI(_DefaultProgress, LightningCLI):
    """LightningCLI for ``VLM`` + ``ShardDataModule``; recipes are its YAML configs."""

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        super().__init__(
            VLM,
            ShardDataModule,
            trainer_class=Trainer,
            args=args,
            run=run,
            parser_kwargs={"parser_mode": "omegaconf"},
            save_config_kwargs={"overwrite": True},
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        # the data pipeline gets what it needs from the model once, typed (VLM.data_transform), never by reaching in
        parser.link_arguments("model", "data.transform", compute_fn=lambda model: model.data_transform(),
                              apply_on="instantiate")


class ModelOnlyCLI(TokenComposeCLI):
    """Reads a recipe and builds its model and data module; no trainer (nothing is fitted)."""

    def instantiate_classes(self) -> None:
        self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")


class ParseOnlyCLI(TokenComposeCLI):
    """Reads and validates a recipe (types, keys, class paths) without building anything."""

    def instantiate_classes(self) -> None:
        return None


def check_recipe_args(args: Sequence[str]) -> None:
    """Raise (SystemExit with the parser's message naming the key) if the recipe arguments do not parse."""
    ParseOnlyCLI(args=[*args, "--trainer.logger", "false"], run=False)


class AnnotateCLI(_DefaultProgress, LightningCLI):
    """LightningCLI for the annotate job (``AnnotateJob`` + ``ShardListDataModule``); MaskInversion needs autograd."""

    def __init__(self, args: Any = None, **kwargs: Any) -> None:
        from tokencompose.annotate import AnnotateJob, ShardListDataModule

        super().__init__(
            AnnotateJob,
            ShardListDataModule,
            trainer_class=Trainer,
            trainer_defaults={"inference_mode": False, "logger": False},
            args=args,
            run=False,
            parser_kwargs={"parser_mode": "omegaconf"},
            save_config_callback=None,
            **kwargs,
        )


def recipe_args(configs: Sequence[str | Path], overrides: Sequence[str] | Mapping[str, Any] = ()) -> list[str]:
    """Recipe files and overrides as command-line arguments: ``--config A --config B --model.x 3 ...``.

    ``overrides`` is either command-line form (``["--model.max_length", "256"]``) or a mapping of dotted keys
    (``{"model.max_length": 256}``).
    """
    args = [a for config in configs for a in ("--config", str(config))]
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            args += [f"--{key.removeprefix('--')}", str(value)]
    else:
        args += list(overrides)
    return args


def load_recipe(configs: Sequence[str | Path], overrides: Sequence[str] | Mapping[str, Any] = (),
                checkpoint: str | None = None) -> VLM:
    """Recipe files (later ones win key by key) + overrides -> the model, with ``checkpoint``'s weights if given.

    The checkpoint must fit the model whole (every tensor name and shape; loaded with ``weights_only=True``):
    a budget override changes what the tokenizers emit, never the weights.
    """
    if not configs:
        raise ValueError("load_recipe: give at least one recipe file (--config)")
    return model_from_args(recipe_args(configs, overrides), checkpoint)


def model_from_args(args: Sequence[str], checkpoint: str | None = None) -> VLM:
    """Recipe command-line arguments (``--config FILE`` ..., ``--model.x VALUE`` ...) -> the model (see
    ``load_recipe``)."""
    from tokencompose.checkpoints import load_weights

    configs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    configs += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    if not configs:
        raise ValueError("give the recipe: --config RECIPE (repeat it for overlays)")
    missing = [c for c in configs if not Path(c).is_file()]
    if missing:
        raise FileNotFoundError(f"--config: recipe file(s) {missing} do not exist")
    model = ModelOnlyCLI(args=[*args, "--trainer.logger", "false"], run=False).model
    if checkpoint is not None:
        load_weights(model, checkpoint, key="--ckpt_path", strict_shapes=True)
    return model

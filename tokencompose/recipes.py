"""Recipes: the LightningCLI parsers that read them, and ``load_recipe`` — recipe files + overrides -> a ``VLM``.

``load_recipe`` is the one way tools build a model from a recipe (``eval``, ``sweep``, the lmms-eval adapter,
notebooks): the same parser as ``tokencompose fit``, so the same files and overrides work, validated when the
recipe is read (before any image is predicted). It builds the model (and the data module linked to it), never a
trainer. With ``meta=True`` it builds the full-size architecture without weights or network: every tensor on the
meta device, hub-named parts from the configurations shipped in ``tokencompose.model_configs`` (``meta_build``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI

from tokencompose.data.datamodule import ShardDataModule
from tokencompose.model import VLM
from tokencompose.model_configs import meta_build
from tokencompose.trainer import Trainer

# LightningCLI warns whenever ``args`` is given while ``sys.argv`` has arguments — which is how every
# ``tokencompose`` command runs it; the arguments it parses are the ones given, so the warning says nothing.
warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")


class TokenComposeCLI(LightningCLI):
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


class AnnotateCLI(LightningCLI):
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


class AnnotateParseOnlyCLI(AnnotateCLI):
    """Reads and validates an annotate recipe without building anything."""

    def instantiate_classes(self) -> None:
        return None


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
                checkpoint: str | None = None, meta: bool = False) -> VLM:
    """Recipe files (later ones win key by key) + overrides -> the model, with ``checkpoint``'s weights if given.

    The checkpoint must fit the model whole (every tensor name and shape; loaded with ``weights_only=True``):
    a budget override changes what the tokenizers emit, never the weights. ``meta``: the architecture on the
    meta device, without weights or network (see the module; ``model.init_weights`` is not read).
    """
    if not configs:
        raise ValueError("load_recipe: give at least one recipe file (--config)")
    return model_from_args(recipe_args(configs, overrides), checkpoint, meta)


def _check_configs(args: Sequence[str]) -> None:
    configs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    configs += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    if not configs:
        raise ValueError("give the recipe: --config RECIPE (repeat it for overlays)")
    missing = [c for c in configs if not Path(c).is_file()]
    if missing:
        raise FileNotFoundError(f"--config: recipe file(s) {missing} do not exist")


def build_recipe(args: Sequence[str], meta: bool = False) -> ModelOnlyCLI:
    """Recipe command-line arguments -> the CLI holding the built ``model``, ``datamodule`` and the parsed
    ``config`` (``trainer.*`` included, not instantiated). ``meta``: see ``load_recipe``."""
    _check_configs(args)
    with meta_build() if meta else contextlib.nullcontext():
        return ModelOnlyCLI(args=[*args, "--trainer.logger", "false"], run=False)


def build_annotate_job(args: Sequence[str], meta: bool = False) -> Any:
    """Annotate-recipe arguments -> its ``AnnotateJob`` (encoder + annotator), without its data or trainer (the
    recipe is validated whole first). ``meta``: see ``load_recipe``."""
    from jsonargparse import ArgumentParser

    from tokencompose.annotate import AnnotateJob

    _check_configs(args)
    config = AnnotateParseOnlyCLI(args=list(args)).config
    parser = ArgumentParser(parser_mode="omegaconf")
    parser.add_class_arguments(AnnotateJob, "job")
    with meta_build() if meta else contextlib.nullcontext():
        return parser.instantiate_classes(parser.parse_object({"job": config.model.as_dict()})).job


def model_from_args(args: Sequence[str], checkpoint: str | None = None, meta: bool = False) -> VLM:
    """Recipe command-line arguments (``--config FILE`` ..., ``--model.x VALUE`` ...) -> the model (see
    ``load_recipe``)."""
    from tokencompose.checkpoints import load_weights

    if meta and checkpoint is not None:
        raise ValueError("--ckpt_path: a meta build has no weights to load a checkpoint into")
    model = build_recipe(args, meta).model
    if checkpoint is not None:
        load_weights(model, checkpoint, key="--ckpt_path", strict_shapes=True)
    return model

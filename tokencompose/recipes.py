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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI

from tokencompose.data.datamodule import ShardDataModule
from tokencompose.hub import WeightsUnavailable
from tokencompose.model import RECIPE_KEY, VLM
from tokencompose.model_configs import meta_build
from tokencompose.trainer import Trainer

# LightningCLI warns whenever ``args`` is given while ``sys.argv`` has arguments — which is how every
# ``tokencompose`` command runs it; the arguments it parses are the ones given, so the warning says nothing.
warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")


def keys_holding(config: Any, value: str, prefix: str = "") -> list[str]:
    """The dotted recipe keys whose value is ``value`` (``init_args`` left out, as overrides may write them)."""
    if hasattr(config, "as_dict"):  # a jsonargparse Namespace
        config = config.as_dict()
    if isinstance(config, Mapping):
        items = [(k, v) for k, v in config.items()]
    elif isinstance(config, list):
        items = [(str(i), v) for i, v in enumerate(config)]
    else:
        return [prefix] if config == value and prefix else []
    return [key for k, v in items
            for key in keys_holding(v, value, prefix if k == "init_args" else f"{prefix}.{k}".lstrip("."))]


def _weights_unavailable(error: BaseException) -> WeightsUnavailable | None:
    """The WeightsUnavailable behind ``error``: jsonargparse wraps what a part inside a union-typed argument
    raises (``object_source: ObjectSource | None``) into a ValueError caused by it."""
    for _ in range(16):  # a chain of causes is short; never loop on a cycle
        if error is None or isinstance(error, WeightsUnavailable):
            return error
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def naming_recipe_keys(config: Any) -> Iterator[None]:
    """Weights that cannot be loaded while a recipe is built: the error names the recipe key(s) that asked."""
    try:
        yield
    except (WeightsUnavailable, ValueError) as error:
        unavailable = _weights_unavailable(error)
        if unavailable is None:
            raise
        raise unavailable.with_keys(keys_holding(config, unavailable.name)) from None


def model_recipe(model_config: Any) -> str:
    """The parsed ``model`` config -> the YAML recipe saved in checkpoints (``init_weights`` dropped: the
    checkpoint's own weights replace it, and the file it named need not exist where the checkpoint goes)."""
    import yaml

    recipe = model_config.as_dict() if hasattr(model_config, "as_dict") else dict(model_config)
    recipe["init_weights"] = None
    return yaml.safe_dump({"model": recipe}, sort_keys=False)


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

    def instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        with naming_recipe_keys(config):
            super().instantiate_classes()
        self.model.recipe = model_recipe(config["model"])

    def before_predict(self) -> None:
        """``predict`` writes what it predicts (``WritePredictions``) unless the recipe has its own writer."""
        from lightning.pytorch.callbacks import BasePredictionWriter

        from tokencompose.predictions import WritePredictions

        if not any(isinstance(c, BasePredictionWriter) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(WritePredictions())

    def after_predict(self) -> None:
        from tokencompose.predictions import WritePredictions

        for writer in (c for c in self.trainer.callbacks if isinstance(c, WritePredictions)):
            print(f"{writer.count} predictions written to {writer.written_to}")

    def add_arguments_to_parser(self, parser: Any) -> None:
        # the data pipeline gets what it needs from the model once, typed (VLM.data_transform), never by reaching in
        parser.link_arguments("model", "data.transform", compute_fn=lambda model: model.data_transform(),
                              apply_on="instantiate")


class ModelOnlyCLI(TokenComposeCLI):
    """Reads a recipe and builds its model and data module; no trainer (nothing is fitted)."""

    def instantiate_classes(self) -> None:
        with naming_recipe_keys(self.config):
            self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self.model.recipe = model_recipe(self.config["model"])


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

    def instantiate_classes(self) -> None:
        with naming_recipe_keys(self.config):
            super().instantiate_classes()


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


def recipe_files(args: Sequence[str]) -> list[str]:
    """The ``--config`` files named in recipe arguments (each must exist; there may be none)."""
    configs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    configs += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    missing = [c for c in configs if not Path(c).is_file()]
    if missing:
        raise FileNotFoundError(f"--config: recipe file(s) {missing} do not exist")
    return configs


def _check_configs(args: Sequence[str]) -> None:
    if not recipe_files(args):
        raise ValueError("give the recipe: --config RECIPE (repeat it for overlays), or a checkpoint that has it "
                         "(--ckpt_path)")


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
    ``load_recipe``). Without ``--config`` the recipe is the one saved in ``checkpoint`` (``load_checkpoint``)."""
    from tokencompose.checkpoints import load_weights

    if meta and checkpoint is not None:
        raise ValueError("--ckpt_path: a meta build has no weights to load a checkpoint into")
    if checkpoint is not None and not recipe_files(args):
        return load_checkpoint(checkpoint, args)
    model = build_recipe(args, meta).model
    if checkpoint is not None:
        load_weights(model, checkpoint, key="--ckpt_path", strict_shapes=True)
    return model


def checkpoint_recipe(path: str | Path) -> tuple[str, dict[str, Any]]:
    """A checkpoint file -> (the recipe saved in it, its tensors); read with ``weights_only=True``."""
    import torch

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--ckpt_path: checkpoint {str(path)!r} does not exist")
    state = torch.load(file, map_location="cpu", weights_only=True)
    recipe = state.get(RECIPE_KEY) if isinstance(state, dict) else None
    if not isinstance(recipe, str):
        raise ValueError(f"--ckpt_path: {str(path)!r} has no recipe (it was not written by training a recipe with this "
                         "version); give the recipe it was trained with: --config RECIPE")
    return recipe, state.get("state_dict", {})


def load_checkpoint(path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> VLM:
    """A checkpoint written by ``tokencompose fit`` -> its model, rebuilt from the recipe saved in it (no YAML file
    needed) with every tensor of the checkpoint. ``overrides`` apply on top, e.g. a test-time budget
    (``{"model.tokenizers.patch.grid": 1}``); one that changes a weight's shape is an error naming the tensor."""
    recipe, weights = checkpoint_recipe(path)
    model = ModelOnlyCLI(args=["--config", recipe, *recipe_args([], overrides), "--trainer.logger", "false"],
                         run=False).model
    own = model.state_dict()
    mismatched = [f"{k} (checkpoint {list(v.shape)}, model {list(own[k].shape)})" for k, v in weights.items()
                  if k in own and own[k].shape != v.shape]
    missing, unexpected = sorted(own.keys() - weights.keys()), sorted(weights.keys() - own.keys())
    if mismatched or missing or unexpected:
        raise ValueError(f"--ckpt_path: {str(path)!r} does not fit the model its recipe + overrides build: shapes "
                         f"{mismatched}, missing {missing[:10]}, unexpected {unexpected[:10]}")
    model.load_state_dict(weights)
    return model

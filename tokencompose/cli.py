"""``tokencompose``: LightningCLI subcommands (fit, validate, test, predict) over recipes, plus ``demo``."""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.cli import LightningCLI

from tokencompose.data.datamodule import ShardDataModule
from tokencompose.model import VLM
from tokencompose.trainer import Trainer


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


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from tokencompose.eval.demo import main as demo_main

        demo_main(argv[1:])
        return
    TokenComposeCLI(args=argv)


if __name__ == "__main__":
    main()

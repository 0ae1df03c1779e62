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


def annotate(argv: list[str]) -> list[Any]:
    """``tokencompose annotate --config recipes/annotate/<name>.yaml``: returns one report per shard."""
    cli = AnnotateCLI(args=argv)
    reports = cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=True) or []
    done = [r for r in reports if not r.skipped_existing]
    corrupt = sum(len(r.corrupt) for r in done)
    print(
        f"annotated {len(done)} shard(s), skipped {len(reports) - len(done)} finished; "
        f"{sum(r.samples_in for r in done)} samples in, {sum(r.samples_out for r in done)} out, {corrupt} corrupt"
    )
    return reports


def data_command(argv: list[str]) -> None:
    """``tokencompose data convert-llava --json FILE --images ROOT --out DIR``."""
    import argparse

    from tokencompose.data.convert_llava import convert_llava

    parser = argparse.ArgumentParser(prog="tokencompose data")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert-llava", help="LLaVA JSON + images -> WebDataset shards")
    convert.add_argument("--json", required=True, help="llava_v1_5_mix665k.json or blip_laion_cc_sbu_558k.json")
    convert.add_argument("--images", required=True, help="the folder the JSON's `image` paths are relative to")
    convert.add_argument("--out", required=True, help="output folder for shards and manifest.json")
    convert.add_argument("--shard-mb", type=float, default=256, help="target shard size in MiB")
    convert.add_argument("--workers", type=int, default=4, help="shards written in parallel")
    args = parser.parse_args(argv)
    report = convert_llava(args.json, args.images, args.out, int(args.shard_mb * 2**20), args.workers)
    print(
        f"{report.samples} samples in {report.shards} shards ({report.bytes / 2**20:.1f} MiB); "
        f"{len(report.missing_images)} missing and {len(report.corrupt_images)} corrupt images "
        f"(ids in {args.out}/manifest.json)"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["data"]:
        data_command(argv[1:])
        return
    if argv[:1] == ["annotate"]:
        annotate(argv[1:])
        return
    if argv[:1] == ["demo"]:
        from tokencompose.eval.demo import main as demo_main

        demo_main(argv[1:])
        return
    TokenComposeCLI(args=argv)


if __name__ == "__main__":
    main()

"""``tokencompose``: LightningCLI subcommands (fit, validate, test, predict) over recipes, plus ``demo``."""

from __future__ import annotations

import sys
from pathlib import Path
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

    def add_arguments_to_parser(self, parser: Any) -> None:
        # the data pipeline gets what it needs from the model once, typed (VLM.data_transform), never by reaching in
        parser.link_arguments("model", "data.transform", compute_fn=lambda model: model.data_transform(),
                              apply_on="instantiate")


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
    from tokencompose.annotate import summary

    cli = AnnotateCLI(args=argv)
    reports = cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=True) or []
    print(summary(reports))
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
    convert.add_argument("--overwrite", action="store_true", help="delete --out's shards of other inputs and start over")
    bench = commands.add_parser("convert-benchmark", help="a benchmark's native release files -> shards")
    bench.add_argument("--benchmark", required=True, help="vqav2, textvqa, vizwiz, gqa, pope, mme, scienceqa, mmbench, mmvet")
    bench.add_argument("--source", required=True, help="questions JSON / TSV / JSONL, or the MME folder")
    bench.add_argument("--images", help="image folder (not for MMBench's TSV or MME)")
    bench.add_argument("--annotations", help="VQAv2 annotations JSON (val)")
    bench.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "convert-benchmark":
        from tokencompose.eval.benchmarks import convert_benchmark

        count = convert_benchmark(args.benchmark, args.source, args.out, args.images, args.annotations)
        print(f"{count} {args.benchmark} samples written to {args.out}")
        return
    report = convert_llava(args.json, args.images, args.out, int(args.shard_mb * 2**20), args.workers, args.overwrite)
    print(
        f"{report.samples} samples in {report.shards} shards ({report.bytes / 2**20:.1f} MiB); "
        f"{len(report.missing_images)} missing, {len(report.corrupt_images)} corrupt and "
        f"{len(report.refused_images)} refused (paths outside --images) images; ids in {args.out}/manifest.json"
    )


def _benchmark_specs(items: list[str]) -> list[tuple[str, str]]:
    specs = []
    for item in items:
        name, _, shards = item.partition("=")
        if not shards:
            raise SystemExit(f"--benchmark {item!r}: expected NAME=SHARDS (e.g. pope=data/pope/pope-{{000000..000008}}.tar)")
        specs.append((name, shards))
    return specs


def eval_command(argv: list[str]) -> None:
    """``tokencompose eval --config RECIPE --ckpt CKPT --benchmark NAME=SHARDS ... --out DIR [-- overrides]``."""
    import argparse
    import json

    import torch

    from tokencompose.eval.runner import evaluate
    from tokencompose.eval.sweep import build_model

    parser = argparse.ArgumentParser(prog="tokencompose eval")
    parser.add_argument("--config", required=True, action="append", help="recipe (repeat for overlays)")
    parser.add_argument("--ckpt", help="checkpoint to evaluate (weights loaded with weights_only=True)")
    parser.add_argument("--benchmark", required=True, action="append", help="NAME=SHARDS, repeatable")
    parser.add_argument("--out", required=True, help="folder for scores, predictions and server answer files")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--devices", type=int, default=1, help="> 1: DDP over this many devices (per node)")
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="recipe overrides after `--`, e.g. --model.tokenizers.patch.grid 3")
    args = parser.parse_args(argv)
    recipe = [a for c in args.config for a in ("--config", c)] + args.overrides
    model = build_model(recipe, {}, args.ckpt)
    trainer = None
    if args.devices > 1 or args.num_nodes > 1:
        trainer = Trainer(devices=args.devices, num_nodes=args.num_nodes, strategy="ddp", logger=False,
                          inference_mode=not model.needs_autograd)
    summary = {}
    for name, shards in _benchmark_specs(args.benchmark):
        result = evaluate(model, name, shards, args.out, args.batch_size, trainer=trainer)
        summary[name] = {"scores": result.scores, "samples": result.samples, "visual_tokens": result.mean_visual_tokens,
                         "cost": result.cost.columns() if result.cost else None, "data": result.report}
        print(f"{name}: {result.samples} samples, {result.mean_visual_tokens:.1f} visual tokens, {result.scores}")
        if trainer is None or trainer.is_global_zero:  # after each benchmark: a later failure keeps these
            (Path(args.out) / "scores.json").write_text(json.dumps(summary, indent=1))
    if trainer is not None and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def sweep_command(argv: list[str]) -> None:
    """``tokencompose sweep --config RECIPE --ckpt CKPT --benchmark NAME=SHARDS --grid KEY=V1,V2 ... --out DIR``."""
    import argparse

    from tokencompose.eval.sweep import parse_grid, sweep

    parser = argparse.ArgumentParser(prog="tokencompose sweep")
    parser.add_argument("--config", required=True, action="append")
    parser.add_argument("--ckpt")
    parser.add_argument("--benchmark", required=True, help="NAME=SHARDS")
    parser.add_argument("--grid", action="append", default=[], help="KEY=V1,V2,... (repeat: the grid is their product)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    (name, shards), = _benchmark_specs([args.benchmark])
    recipe = [a for c in args.config for a in ("--config", c)] + args.overrides
    rows = sweep(recipe, args.ckpt, name, shards, parse_grid(args.grid), args.out, args.batch_size)
    print((Path(args.out) / "sweep.md").read_text())
    print(f"{len(rows)} settings; CSV, Markdown and plots in {args.out}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["eval"]:
        eval_command(argv[1:])
        return
    if argv[:1] == ["sweep"]:
        sweep_command(argv[1:])
        return
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

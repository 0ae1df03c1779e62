"""``tokencompose eval`` and ``tokencompose sweep``: a trained recipe on benchmarks, at one budget or a grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def benchmark_specs(items: list[str]) -> list[tuple[str, str]]:
    """['pope=data/pope', ...] -> [(name, shards), ...]."""
    specs = []
    for item in items:
        name, _, shards = item.partition("=")
        if not name or not shards:
            raise ValueError(f"--benchmark {item!r}: expected NAME=SHARDS (e.g. pope=data/pope)")
        specs.append((name, shards))
    return specs


def eval_command(recipe: list[str], benchmark: list[str], out: str, ckpt_path: str | None = None, batch_size: int = 8,
                 devices: int = 1, num_nodes: int = 1) -> dict[str, Any]:
    """Evaluate a trained recipe on benchmarks: scores.json, <benchmark>_predictions.jsonl, server answer files.

    The recipe is given as for ``fit``: ``--config RECIPE`` (repeatable) and inline overrides such as
    ``--model.tokenizers.patch.grid 3``.

    Args:
        benchmark: NAME=SHARDS (a converted folder, a brace pattern, ...); repeat the option for several.
        out: folder for scores, predictions and server answer files.
        ckpt_path: the checkpoint to evaluate (weights only, loaded with weights_only=True).
        batch_size: samples per batch (predictions do not depend on it).
        devices: more than 1: DDP over this many devices per node, rank 0 writes.
        num_nodes: nodes for DDP.
    """
    from tokencompose.eval.runner import evaluate
    from tokencompose.recipes import model_from_args

    specs = benchmark_specs(benchmark)
    model = model_from_args(recipe, ckpt_path)
    trainer = None
    if devices > 1 or num_nodes > 1:
        from tokencompose.trainer import Trainer

        trainer = Trainer(devices=devices, num_nodes=num_nodes, strategy="ddp", logger=False,
                          inference_mode=not model.needs_autograd)
    summary: dict[str, Any] = {}
    for name, shards in specs:
        result = evaluate(model, name, shards, out, batch_size, trainer=trainer)
        summary[name] = {"scores": result.scores, "samples": result.samples, "visual_tokens": result.mean_visual_tokens,
                         "cost": result.cost.columns() if result.cost else None, "data": result.report}
        print(f"{name}: {result.samples} samples, {result.mean_visual_tokens:.1f} visual tokens, {result.scores}")
        if trainer is None or trainer.is_global_zero:  # after each benchmark: a later failure keeps these
            (Path(out) / "scores.json").write_text(json.dumps(summary, indent=1))
    if trainer is not None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    return summary


def sweep_command(recipe: list[str], benchmark: list[str], out: str, grid: list[str] | None = None,
                  ckpt_path: str | None = None, batch_size: int = 8) -> list[dict[str, Any]]:
    """One checkpoint on benchmarks at every point of a grid of test-time budgets: sweep.csv, sweep.md, plots.

    The recipe is given as for ``fit`` (``--config``, inline overrides); nothing is retrained.

    Args:
        benchmark: NAME=SHARDS; repeat the option for several.
        out: folder for the table, the plots and each point's predictions.
        grid: KEY=V1,V2,... (e.g. model.tokenizers.objects.max_objects=20,5); repeat: the grid is their product.
        ckpt_path: the checkpoint every point loads.
        batch_size: samples per batch.
    """
    from tokencompose.eval.sweep import parse_grid, sweep

    specs = benchmark_specs(benchmark)
    points = parse_grid(grid or [])
    rows = sweep(recipe, ckpt_path, specs, points, out, batch_size)
    print((Path(out) / "sweep.md").read_text())
    print(f"{len(rows)} settings; CSV, Markdown and plots in {out}")
    return rows

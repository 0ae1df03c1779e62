"""``sweep``: one checkpoint x a grid of test-time budgets -> CSV, a Markdown table like the paper's, plots.

Every grid point rebuilds the model from the recipe with its overrides and loads the same checkpoint, so
nothing is retrained: the budget knobs (object count, IoU threshold, patch grid, ...) only change what the
tokenizers emit.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

from tokencompose.checkpoints import load_weights
from tokencompose.eval.runner import EvalResult, evaluate


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """['model.tokenizers.objects.max_objects=20,10,5', ...] -> {key: values}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, _, values = item.partition("=")
        if not key or not values:
            raise ValueError(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. model.tokenizers.patch.grid=6,3)")
        grid[key] = values.split(",")
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def build_model(recipe_args: list[str], overrides: dict[str, str], checkpoint: str | None) -> Any:
    from tokencompose.cli import TokenComposeCLI

    args = [*recipe_args, "--trainer.logger", "false"]
    for key, value in overrides.items():
        args += [f"--{key}", value]
    model = TokenComposeCLI(args=args, run=False).model
    if checkpoint is not None:
        load_weights(model, checkpoint, key="--ckpt", strict_shapes=True)  # an evaluated model must fit whole
    return model


def row(point: dict[str, str], result: EvalResult, slots: int) -> dict[str, Any]:
    out: dict[str, Any] = {**point, "visual_token_slots": slots, "visual_tokens": round(result.mean_visual_tokens, 2)}
    out.update({f"{result.benchmark}/{k}": round(v, 3) for k, v in result.scores.items()})
    if result.cost is not None:
        out.update(result.cost.columns())
    return out


def write_outputs(rows: list[dict[str, Any]], out: Path, score_key: str) -> dict[str, Path]:
    """CSV + Markdown + two plots (score and time to first token against visual tokens)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "sweep.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    shown = [c for c in columns if not c.startswith(("gflops_", "ms_"))] + ["ms_encoder", "ms_prefill", "gflops_prefill"]
    shown = [c for c in dict.fromkeys(shown) if c in columns]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in shown) + " |" for r in sorted(rows, key=lambda r: -r["visual_tokens"])]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    paths = {"csv": out / "sweep.csv", "markdown": out / "sweep.md"}
    for y, name in ((score_key, "score_vs_tokens.png"), ("ttft_ms", "latency_vs_tokens.png")):
        if all(y in r for r in rows):
            fig, ax = plt.subplots(figsize=(4.5, 3.2))
            ax.scatter([r["visual_tokens"] for r in rows], [r[y] for r in rows])
            ax.set_xlabel("visual tokens per image")
            ax.set_ylabel(y)
            fig.tight_layout()
            fig.savefig(out / name)
            plt.close(fig)
            paths[name] = out / name
    return paths


def sweep(recipe_args: list[str], checkpoint: str | None, benchmark: str, shards: str, grid: dict[str, list[str]],
          out: str | Path, batch_size: int = 8, cost_samples: int = 2) -> list[dict[str, Any]]:
    out = Path(out)
    rows = []
    for point in grid_points(grid) or [{}]:
        model = build_model(recipe_args, point, checkpoint)
        name = "_".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items()) or "recipe"
        result = evaluate(model, benchmark, shards, out / name, batch_size, cost_samples)
        rows.append(row(point, result, sum(model.visual_tokens_per_image().values())))
    score_key = next((k for k in rows[0] if k.startswith(f"{benchmark}/")), "visual_tokens")
    write_outputs(rows, out, score_key)
    return rows

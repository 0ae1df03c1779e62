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

from tokencompose.eval.plots import group_by_scheme, plot_sweep
from tokencompose.eval.runner import EvalResult, evaluate
from tokencompose.progress import meter


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
    """Recipe command-line arguments + {dotted key: value} overrides + checkpoint -> the model (``load_recipe``)."""
    from tokencompose.recipes import model_from_args

    return model_from_args([*recipe_args, *override_args(overrides)], checkpoint)


def override_args(overrides: dict[str, str]) -> list[str]:
    return [a for key, value in overrides.items() for a in (f"--{key}", str(value))]


def check_recipe_args(args: list[str]) -> None:
    from tokencompose.recipes import check_recipe_args as check

    check(args)


def row(point: dict[str, str], results: list[EvalResult], slots: int) -> dict[str, Any]:
    """One grid point: its overrides, visual tokens (from the first benchmark), every benchmark's scores, and the
    cost measured on the first benchmark."""
    first = results[0]
    out: dict[str, Any] = {**point, "visual_token_slots": slots, "visual_tokens": round(first.mean_visual_tokens, 2)}
    for result in results:
        out.update({f"{result.benchmark}/{k}": round(v, 3) for k, v in result.scores.items()})
    if first.cost is not None:
        out.update(first.cost.columns())
    return out


def write_outputs(rows: list[dict[str, Any]], out: Path, score_key: str, grid_keys: list[str] | None = None,
                  scheme: str = "recipe") -> dict[str, Path]:
    """CSV + Markdown + plots (``tokencompose.eval.plots``: score against visual tokens and GFLOPs with the Pareto
    front, time to first token; the first grid key is the budget each point is labelled with, the other keys
    split the points into series)."""
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
    series, labels = group_by_scheme(rows, [k for k in grid_keys or [] if all(k in r for r in rows)], scheme)
    return {"csv": out / "sweep.csv", "markdown": out / "sweep.md", **plot_sweep(series, labels, score_key, out)}


def sweep(recipe_args: list[str], checkpoint: str | None, benchmarks: list[tuple[str, str]],
          grid: dict[str, list[str]], out: str | Path, batch_size: int = 8, cost_samples: int = 2) -> list[dict[str, Any]]:
    """Every grid point: the model rebuilt from the recipe with the point's overrides and ``checkpoint``'s weights,
    evaluated on each (name, shards) of ``benchmarks``. Returns the rows written to sweep.csv / sweep.md."""
    out = Path(out)
    rows = []
    points = grid_points(grid) or [{}]
    for point in points:  # every point's overrides are checked before the first prediction
        check_recipe_args([*recipe_args, *override_args(point)])
    with meter(len(points), "sweep", unit="point") as progress:
        for point in points:
            model = build_model(recipe_args, point, checkpoint)
            name = "_".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items()) or "recipe"
            results = [evaluate(model, benchmark, shards, out / name, batch_size, cost_samples if i == 0 else 0)
                       for i, (benchmark, shards) in enumerate(benchmarks)]
            rows.append(row(point, results, sum(model.visual_tokens_per_image().values())))
            progress.update(1)
    score_key = next((k for k in rows[0] if k.startswith(f"{benchmarks[0][0]}/")), "visual_tokens")
    configs = [recipe_args[i + 1] for i, a in enumerate(recipe_args[:-1]) if a == "--config"]
    write_outputs(rows, out, score_key, list(grid), Path(configs[-1]).stem if configs else "recipe")
    return rows

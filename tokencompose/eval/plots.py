"""Sweep plots: score against visual tokens and against FLOPs, one series per scheme, the Pareto front drawn.

``pareto_front`` is a pure function over (cost, score) pairs; ``plot_sweep`` draws rows as ``sweep`` writes them
(one dict per grid point) and can take several sweeps at once (``{scheme: rows}``), e.g. read back from their
``sweep.csv`` files to compare recipes on one figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# the stages paid before the first answer token: what a token budget saves
FLOP_COLUMNS = ("gflops_encoder", "gflops_mask_front_end", "gflops_reduction", "gflops_projector", "gflops_prefill")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (cost lower or equal AND score higher or equal, one strictly),
    ordered by cost. ``points``: (cost, score) pairs, e.g. (visual tokens, accuracy)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = float("-inf")
    for i in order:
        if points[i][1] > best:  # beats every cheaper (or as cheap) point kept so far
            front.append(i)
            best = points[i][1]
    return front


def gflops_to_first_token(row: Mapping[str, Any]) -> float | None:
    """Encoder + mask front end + reduction + projector + prefill GFLOPs of a row, or None without cost columns."""
    if not any(c in row for c in FLOP_COLUMNS):
        return None
    return sum(float(row.get(c, 0.0) or 0.0) for c in FLOP_COLUMNS)


def _draw(ax: Any, series: Mapping[str, list[dict[str, Any]]], x_of: Any, y: str, labels: Mapping[str, list[str]],
          xlabel: str, y_err: str | None = None) -> None:
    everything = []
    for name, rows in series.items():
        points = sorted(((x_of(r), float(r[y]), label, r) for r, label in zip(rows, labels[name], strict=True)),
                        key=lambda p: p[0])
        errors = [float(p[3].get(y_err, 0.0)) / 2 for p in points] if y_err else None
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=errors, marker="o", capsize=3, label=name)
        for px, py, label, _ in points:
            ax.annotate(label, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7)
        everything += [(p[0], p[1]) for p in points]
    if not y_err:  # a front of latencies would be upside down (lower is better there)
        front = [everything[i] for i in pareto_front(everything)]
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", linestyle="--", color="grey",
                linewidth=1, label="Pareto front")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_sweep(series: Mapping[str, list[dict[str, Any]]], labels: Mapping[str, list[str]], score_key: str,
               out: Path) -> dict[str, Path]:
    """Rows grouped by scheme (``series``) with each point's budget label (``labels``, aligned with the rows) ->
    ``score_vs_tokens.png`` (against visual tokens and, when cost was measured, GFLOPs to the first token, side by
    side) and ``latency_vs_tokens.png`` (median TTFT, IQR as error bars). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for rs in series.values() for r in rs]
    paths: dict[str, Path] = {}
    if rows and all(score_key in r for r in rows):
        with_flops = all(gflops_to_first_token(r) is not None for r in rows)
        fig, axes = plt.subplots(1, 2 if with_flops else 1, figsize=(10 if with_flops else 5, 3.8), squeeze=False)
        _draw(axes[0, 0], series, lambda r: float(r["visual_tokens"]), score_key, labels, "visual tokens per image")
        if with_flops:
            _draw(axes[0, 1], series, gflops_to_first_token, score_key, labels, "GFLOPs to the first token")
        fig.tight_layout()
        fig.savefig(out / "score_vs_tokens.png", dpi=120)
        plt.close(fig)
        paths["score_vs_tokens.png"] = out / "score_vs_tokens.png"
    if rows and all("ttft_ms" in r for r in rows):
        fig, ax = plt.subplots(figsize=(5, 3.8))
        _draw(ax, series, lambda r: float(r["visual_tokens"]), "ttft_ms", labels, "visual tokens per image",
              y_err="ttft_ms_iqr")
        fig.tight_layout()
        fig.savefig(out / "latency_vs_tokens.png", dpi=120)
        plt.close(fig)
        paths["latency_vs_tokens.png"] = out / "latency_vs_tokens.png"
    return paths


def group_by_scheme(rows: list[dict[str, Any]], grid_keys: Sequence[str], scheme: str
                    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[str]]]:
    """One sweep's rows -> series and labels: the first grid key is the budget (each point labelled with its
    value); every combination of the other keys is its own scheme (``scheme`` + those values)."""
    budget, others = (grid_keys[0], list(grid_keys[1:])) if grid_keys else (None, [])
    series: dict[str, list[dict[str, Any]]] = {}
    labels: dict[str, list[str]] = {}
    for r in rows:
        name = " ".join([scheme, *(f"{k.rsplit('.', 1)[-1]}={r[k]}" for k in others)])
        series.setdefault(name, []).append(r)
        labels.setdefault(name, []).append(f"{budget.rsplit('.', 1)[-1]}={r[budget]}" if budget else scheme)
    return series, labels

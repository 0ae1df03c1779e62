"""``tokencompose fitprune``: fit a FitPrune deletion schedule for a recipe to a FLOPs budget, as a JSON file."""

from __future__ import annotations

from typing import Any


def fitprune_command(recipe: list[str], out: str, budget: float, shards: str, ckpt_path: str | None = None,
                     samples: int = 16, tolerance: float = 0.01, device: str | None = None) -> dict[str, Any]:
    """Fit a FitPrune per-layer deletion schedule to a FLOPs budget on a few samples; write it as JSON for
    ``--model.decoding.init_args.schedule_file``.

    The recipe is given as for ``fit``: ``--config RECIPE`` (repeatable) and inline overrides; its LLM needs
    ``attn_implementation: eager``.

    Args:
        out: the schedule file to write (only once the fit has succeeded).
        budget: the visual tokens' LLM FLOPs to keep, a fraction in (0, 1); the official 90 % reduction is 0.1.
        shards: the samples to fit on (benchmark or training shards: a converted folder, a brace pattern, ...).
        ckpt_path: the weights to fit with (weights_only); default: the recipe's own.
        samples: how many samples with an image (the first ones).
        tolerance: the width at which the binary search on alpha stops (official 0.01).
        device: where to run (default: CUDA when available, else CPU).
    """
    from tokencompose.llm.fitprune_fit import fitprune_fit

    result = fitprune_fit(recipe, out, budget, shards, ckpt_path, samples, tolerance, device)
    print(f"schedule {result.schedule} (alpha {result.alpha:.4f}; {result.flops:.4f} of the visual tokens' LLM FLOPs "
          f"on the samples, budget {budget}) written to {out}")
    return {"schedule": result.schedule, "alpha": result.alpha, "flops": result.flops, "out": out}

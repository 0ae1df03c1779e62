"""``tokencompose demo``: the main job (two tiny schemes trained and compared on the synthetic shapes)."""

from __future__ import annotations

import shlex
from pathlib import Path


def demo(recipe: list[str] | None = None, steps: int | None = None, out: str = "runs/demo_results.md",
         recipes: str | None = None) -> str:
    """The main job: train tiny Mask-LLaVA and tiny LLaVA-1.5 on the built-in synthetic shapes, evaluate both
    with the benchmark runner, print one comparison table and write it as Markdown (under a line naming the
    command, the date and the machine).

    Inline recipe overrides (``--trainer.max_steps 100``, ``--model.max_new_tokens 4``) apply to both recipes.
    Runs from any directory: the recipes are the package's own; data, runs and checkpoints go under the current
    directory (data/synthetic, runs/, checkpoints/).

    Args:
        steps: override trainer.max_steps of both recipes.
        out: where to write the Markdown table.
        recipes: a folder with mask_llava.yaml and llava15.yaml (default: the shipped tiny recipes).
    """
    from tokencompose.eval.demo import SCHEMES, train_and_evaluate
    from tokencompose.eval.report import format_table, provenance
    from tokencompose.recipe_files import find_recipe

    extra = ([] if steps is None else ["--trainer.max_steps", str(steps)]) + list(recipe or [])
    results = []
    for scheme, file in SCHEMES:
        path = Path(recipes) / file if recipes is not None else find_recipe(f"tiny/{file}")
        if not path.exists():
            raise SystemExit(f"tokencompose demo: recipe {path} not found (--recipes names a folder with {file})")
        print(f"\n=== {scheme}: {path}")
        results.append(train_and_evaluate(scheme, path, extra, Path(out).parent / "demo_eval"))
    table = format_table(results)
    header = provenance(shlex.join(["tokencompose", "demo", *extra]))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(f"{header}\n\n{table}\n")
    print("\nValidation answers on synthetic shapes (greedy, exact match, %):\n")
    print(header + "\n")
    print(table)
    print(f"\n(table written to {out})")
    return table

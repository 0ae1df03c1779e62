"""The main job: train the tiny Mask-LLaVA and LLaVA-1.5 recipes on synthetic shapes, then compare them."""

from __future__ import annotations

from pathlib import Path

from tokencompose.eval.report import SchemeResult, summarise

SCHEMES = (("Mask-LLaVA (CLS + 2x2 patches + objects)", "mask_llava.yaml"), ("LLaVA-1.5 (all patches)", "llava15.yaml"))


def train_and_evaluate(scheme: str, recipe: Path, extra_args: list[str], out: Path) -> SchemeResult:
    """Fit one recipe through the CLI, then evaluate it with the benchmark runner on the validation shards."""
    from tokencompose.eval.runner import evaluate
    from tokencompose.recipes import TokenComposeCLI

    cli = TokenComposeCLI(args=["--config", str(recipe), *extra_args], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    result = evaluate(cli.model, "shapes", cli.datamodule.shards("predict").urls, out / recipe.stem, batch_size=16)
    summary = summarise(scheme, sum(cli.model.visual_tokens_per_image().values()), result.records)
    summary.cost = result.cost
    return summary

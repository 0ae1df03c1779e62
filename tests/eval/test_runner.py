"""evaluate / sweep / the CLI on a tiny checkpoint over synthetic shards."""

import csv
import json

import pytest

from tests.recipe_utils import REPO, small_data
from tokencompose.cli import main
from tokencompose.eval.runner import evaluate
from tokencompose.eval.sweep import build_model, parse_grid, sweep
from tokencompose.recipes import TokenComposeCLI

RECIPE = REPO / "recipes" / "tiny" / "mask_llava.yaml"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, synthetic_root):
    out = tmp_path_factory.mktemp("ckpt")
    cli = TokenComposeCLI(args=["--config", str(RECIPE), "--trainer.max_steps", "3", *small_data(synthetic_root)], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.trainer.save_checkpoint(out / "tiny.ckpt")
    return out / "tiny.ckpt"


def recipe_args(root):
    return ["--config", str(RECIPE), *small_data(root)]


def test_predictions_do_not_depend_on_batch_size_and_cost_is_split(checkpoint, synthetic_root, tmp_path):
    model = build_model(recipe_args(synthetic_root), {}, str(checkpoint))
    shards = str(synthetic_root / "val-000000.tar")
    one = evaluate(model, "shapes", shards, tmp_path / "b1", batch_size=1, cost_samples=0)
    eight = evaluate(model, "shapes", shards, tmp_path / "b8", batch_size=8, cost_samples=2)
    assert one.samples == eight.samples == 32
    assert [r["prediction"] for r in one.records] == [r["prediction"] for r in eight.records]
    assert 0 <= eight.scores["score"] <= 100 and (tmp_path / "b8" / "shapes_predictions.jsonl").exists()
    cost = eight.cost.columns()
    assert cost["gflops_prefill"] > 0 and cost["gflops_encoder"] > 0 and cost["ms_prefill"] > 0
    assert cost["mask_front_end"] == "cached" and cost["gflops_mask_front_end"] == 0
    assert cost["latency_ms"] >= cost["ttft_ms"] > 0 and cost["decode_tokens_per_s"] > 0 and cost["timed_runs"] == 2 * 5


def test_sweep_writes_csv_markdown_and_plots_without_retraining(checkpoint, synthetic_root, tmp_path):
    grid = parse_grid(["model.tokenizers.objects.max_objects=4,1", "model.tokenizers.patch.grid=2,1"])
    rows = sweep(recipe_args(synthetic_root), str(checkpoint), [("shapes", str(synthetic_root / "val-000000.tar"))], grid,
                 tmp_path, batch_size=8, cost_samples=1)
    assert len(rows) == 4 and {r["visual_token_slots"] for r in rows} == {1 + 4 + 4, 1 + 4 + 1, 1 + 1 + 4, 1 + 1 + 1}
    with (tmp_path / "sweep.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and "gflops_prefill" in table[0] and "shapes/score" in table[0]
    fewer = min(rows, key=lambda r: r["visual_token_slots"])
    more = max(rows, key=lambda r: r["visual_token_slots"])
    assert fewer["gflops_prefill"] < more["gflops_prefill"]  # fewer visual tokens, cheaper prefill
    assert (tmp_path / "sweep.md").read_text().startswith("| model.tokenizers.objects.max_objects")
    assert (tmp_path / "score_vs_tokens.png").exists() and (tmp_path / "latency_vs_tokens.png").exists()
    with pytest.raises(ValueError, match="KEY=V1"):
        parse_grid(["model.tokenizers.patch.grid"])


def test_eval_command(checkpoint, synthetic_root, tmp_path):
    main(["eval", "--config", str(RECIPE), "--ckpt_path", str(checkpoint), "--benchmark",
          f"shapes={synthetic_root}/val-000000.tar", "--out", str(tmp_path), *small_data(synthetic_root)])
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["shapes"]["samples"] == 32 and "score" in scores["shapes"]["scores"]
    report = scores["shapes"]["data"]  # what was scored, by which scorer, and every data problem by reason
    assert report["scored"] == 32 and report["shards"] == 1 and report["issues"] == {}
    assert report["scorer"] == "shapes-exact"


def test_evaluate_sizes_prompts_with_the_test_time_budget(checkpoint, synthetic_root, tmp_path):
    """A training budget of 64 object slots would make every prompt too long for max_length 80; evaluation runs
    with the test budget (6 objects), whatever mode the model is in when handed to ``evaluate``."""
    overrides = {"model.tokenizers.objects.init_args.train_max_objects": "64", "model.max_length": "80"}
    model = build_model(recipe_args(synthetic_root), overrides, str(checkpoint)).train()
    assert sum(model.visual_tokens_per_image(training=True).values()) == 1 + 4 + 64
    result = evaluate(model, "shapes", str(synthetic_root / "val-000000.tar"), tmp_path, batch_size=8, cost_samples=0)
    assert result.samples == 32

"""The whole chain a user runs, on fabricated data: convert-llava -> annotate -> fit -> eval, folders all the way,
each step with its recipe's own settings (only paths, sizes and step counts overridden)."""

from __future__ import annotations

import json

from tests.data.test_convert_llava import fabricate
from tests.recipe_utils import REPO
from tokencompose.cli import annotate
from tokencompose.data.convert_llava import convert_llava
from tokencompose.eval.runner import evaluate
from tokencompose.recipes import TokenComposeCLI


def test_convert_annotate_fit_eval_on_folders(tmp_path):
    source, images, _ = fabricate(tmp_path, count=16)
    converted = tmp_path / "converted"
    convert_llava(str(source), str(images), str(converted), shard_bytes=6000, workers=1)
    annotated = tmp_path / "annotated"
    annotate(["--config", str(REPO / "recipes/annotate/tiny.yaml"), "--data.inputs", str(converted),
              "--data.synthetic", "null", "--model.output_dir", str(annotated),
              "--model.annotator.init_args.inversion.iterations", "2"])
    manifest = json.loads((annotated / "manifest.json").read_text())
    assert manifest["complete"] and manifest["samples"] == json.loads((converted / "manifest.json").read_text())["samples"]

    # the stage-1 recipe, reading the stored masks and MaskInversion embeddings instead of annotating online
    recipe = REPO / "recipes/tiny/mask_llava_stage1.yaml"
    cli = TokenComposeCLI(args=[
        "--config", str(recipe), "--model.object_source", "null", "--trainer.inference_mode", "true",
        "--data.synthetic", "null", "--data.train", str(annotated), "--data.val", str(annotated),
        "--data.batch_size", "4", "--trainer.max_steps", "4", "--trainer.val_check_interval", "4",
        "--trainer.limit_val_batches", "1", "--trainer.logger", "false", "--trainer.callbacks", "[]",
        "--trainer.default_root_dir", str(tmp_path / "runs")], run=False)
    assert cli.datamodule.train_mode == "resampled"  # the recipe's own data settings
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 4
    assert cli.datamodule.batches_per_rank() == manifest["samples"] // 4  # epoch length from annotate's manifest

    result = evaluate(cli.model, "shapes", str(annotated), tmp_path / "eval", batch_size=4, cost_samples=0)
    # every image sample once; the 4 text-only ones (plain is an image -> caption template) are skipped and counted
    assert result.samples == manifest["samples"] - 4 == 10
    assert (tmp_path / "eval" / "shapes_predictions.jsonl").exists()

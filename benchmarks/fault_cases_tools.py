"""Fault cases for the tools around the data stream: convert-llava, annotate, eval, training, weights.

Each case builds its bad input in ``ctx.root`` and returns what happened in words; ``faults.py`` runs them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def llava_json(root: Path, records: list[dict]) -> tuple[Path, Path]:
    """A LLaVA JSON file and an image folder with one 32x24 JPEG per record that names ``ok/<i>.jpg``."""
    images = root / "images"
    (images / "ok").mkdir(parents=True, exist_ok=True)
    for i in range(8):
        Image.fromarray((np.random.default_rng(i).random((24, 32, 3)) * 255).astype(np.uint8)).save(images / "ok" / f"{i}.jpg")
    source = root / f"llava-{len(records)}.json"
    source.write_text(json.dumps(records))
    return source, images


def record(i: int, image: str | None) -> dict:
    out = {"id": f"r{i}", "conversations": [{"from": "human", "value": "<image>\nwhat is it?"}, {"from": "gpt", "value": "a"}]}
    if image is not None:
        out["image"] = image
    return out


def convert_path_escape(ctx) -> str:
    from tokencompose.data.convert_llava import convert_llava

    outside = ctx.root / "secret.jpg"
    Image.new("RGB", (8, 8)).save(outside)
    source, images = llava_json(ctx.root / "escape", [record(0, "ok/0.jpg"), record(1, "../../secret.jpg"),
                                                      record(2, str(outside))])
    (images / "ok" / "link.jpg").symlink_to(outside)
    records = json.loads(source.read_text()) + [record(3, "ok/link.jpg")]
    source.write_text(json.dumps(records))
    report = convert_llava(str(source), str(images), str(ctx.root / "escape-out"), workers=1)
    manifest = json.loads((ctx.root / "escape-out" / "manifest.json").read_text())
    return f"{report.samples} sample written; refused: " + ", ".join(r["image"] for r in manifest["refused_images"])


def convert_malformed(ctx) -> str:
    from tokencompose.data.convert_llava import convert_llava

    source, images = llava_json(ctx.root / "malformed", [record(0, "ok/0.jpg"), {"id": "r1"}, record(2, 7)])
    convert_llava(str(source), str(images), str(ctx.root / "malformed-out"), workers=1)
    return "converted"


def convert_changed_inputs(ctx) -> str:
    from tokencompose.data.convert_llava import convert_llava

    out = ctx.root / "rerun-out"
    source, images = llava_json(ctx.root / "rerun", [record(i, f"ok/{i}.jpg") for i in range(4)])
    convert_llava(str(source), str(images), str(out), workers=1)
    source.write_text(json.dumps([record(i, f"ok/{i}.jpg") for i in range(1, 6)]))
    convert_llava(str(source), str(images), str(out), workers=1)
    return "converted again"


def annotate_truncated_input(ctx) -> str:
    from tokencompose.cli import annotate
    from tokencompose.data import write_shard

    shards = ctx.root / "to-annotate"
    shards.mkdir()
    write_shard(shards / "a.tar", [ctx.good(i) for i in range(4)])
    write_shard(shards / "b.tar", [ctx.good(i) | {"__key__": f"b{i}"} for i in range(4)])
    (shards / "b.tar").write_bytes((shards / "b.tar").read_bytes()[:5000])
    reports = annotate(["--config", str(REPO / "recipes/annotate/tiny.yaml"), "--data.inputs", f"{shards}/{{a,b}}.tar",
                        "--data.synthetic", "null", "--model.output_dir", str(ctx.root / "annotated"),
                        "--model.annotator.init_args.inversion.iterations", "1"])
    done = {Path(r.shard).name: r for r in reports}
    return (f"a.tar annotated ({done['a.tar'].samples_out} samples); b.tar skipped and reported: "
            f"{done['b.tar'].error.split(': ', 2)[-1]}")


def eval_damaged_and_repeated(ctx) -> str:
    from tokencompose.data import write_shard
    from tokencompose.eval.runner import evaluate

    folder = ctx.root / "bench"
    folder.mkdir()
    write_shard(folder / "s-0.tar", [ctx.good(i) | {"__key__": f"a{i}"} for i in range(4)])
    write_shard(folder / "s-1.tar", [ctx.good(i) | {"__key__": f"b{i}"} for i in range(4)])
    (folder / "s-1.tar").write_bytes((folder / "s-1.tar").read_bytes()[:9000])
    urls = [str(folder / "s-0.tar"), str(folder / "s-1.tar"), str(folder / "." / "s-0.tar")]
    result = evaluate(ctx.model.eval(), "shapes", urls, ctx.root / "eval", batch_size=2, cost_samples=0)
    lines = sum(1 for _ in (ctx.root / "eval" / "shapes_predictions.jsonl").open())
    issues = ", ".join(f"{k}: {v['count']}" for k, v in result.report["issues"].items())
    return f"{result.samples} samples predicted, {lines} prediction lines written; {issues}"


def non_finite_loss(every_step: bool) -> Callable:
    def run(ctx) -> str:
        import lightning as L
        from torch.utils.data import DataLoader

        model = ctx.fresh_model("--model.optimization.lr", "1e-3", "--model.optimization.max_nonfinite_steps", "3")
        batch = ctx.batch(model)
        original = model.training_step
        bad = (lambda step: step >= 2) if every_step else (lambda step: step in (1, 2))
        model.training_step = lambda batch, batch_idx: original(batch, batch_idx) * (math.nan if bad(model.global_step) else 1.0)
        trainer = L.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
        try:
            trainer.fit(model, DataLoader([batch] * 8, batch_size=None, collate_fn=lambda b: b))
        finally:
            finite = all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
            ctx.note = f"; {model.skipped_steps} step(s) skipped, every weight finite: {finite}"
        return f"trained {trainer.global_step} steps" + ctx.note

    return run


def init_weights_mismatch(ctx) -> str:
    from tokencompose.checkpoints import load_weights

    state = ctx.model.state_dict()
    state["projectors.shared.layers.0.weight"] = torch.zeros(64, 48)
    path = ctx.root / "stage1.ckpt"
    torch.save({"state_dict": state}, path)
    report = load_weights(ctx.model, str(path))
    said = f"default: copied {len(report.loaded)}, skipped {[n for n, *_ in report.shape_mismatches]} (logged); "
    try:
        load_weights(ctx.model, str(path), strict_shapes=True)
    except ValueError as error:
        return said + f"strict_shapes: **ValueError** {str(error)[:80]}…"
    return said + "strict_shapes: loaded"


CASES: list[tuple[str, Callable]] = [
    ("convert-llava: `../`, absolute and symlinked image paths out of `--images`", convert_path_escape),
    ("convert-llava: records without `conversations`, `image` not a string", convert_malformed),
    ("convert-llava: rerun into the same folder with other inputs", convert_changed_inputs),
    ("annotate: an input shard cut short", annotate_truncated_input),
    ("eval: a benchmark shard cut short, a shard given twice", eval_damaged_and_repeated),
    ("fit: NaN loss at two steps", non_finite_loss(every_step=False)),
    ("fit: NaN loss at every step from step 2", non_finite_loss(every_step=True)),
    ("init_weights: a projector of another width", init_weights_mismatch),
]

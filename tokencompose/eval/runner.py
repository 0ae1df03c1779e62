"""``evaluate``: one model on one benchmark's shards -> scores, predictions file, server answer file, cost."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.fabric.utilities.apply_func import move_data_to_device

from tokencompose.data.datamodule import ShardDataModule, _urls
from tokencompose.data.shards import iterate_shard
from tokencompose.eval.benchmarks import get_benchmark
from tokencompose.eval.cost import Cost, measure_cost


@dataclass
class EvalResult:
    benchmark: str
    scores: dict[str, float]
    samples: int
    mean_visual_tokens: float
    records: list[dict[str, Any]]
    cost: Cost | None
    predictions_file: Path
    export_file: Path | None


def load_records(shards: list[str]) -> dict[str, dict[str, Any]]:
    """Sample key -> its JSON record (references and metadata for scoring), without decoding images."""
    return {raw["__key__"]: json.loads(raw["json"]) for url in shards for raw in iterate_shard(url)}


def _flatten(scores: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(scores, dict):
        out: dict[str, float] = {}
        for k, v in scores.items():
            out.update(_flatten(v, f"{prefix}{k}/" if prefix or len(scores) > 1 else f"{k}/"))
        return {k.rstrip("/"): v for k, v in out.items()}
    return {prefix.rstrip("/") or "score": float(scores)}


def _predict_distributed(model, data: ShardDataModule, trainer) -> list[dict[str, Any]]:
    """Each rank predicts its exact share of the shards; every rank gets all records back."""
    batches = trainer.predict(model, datamodule=data, return_predictions=True) or []
    records = [record for batch in batches for record in batch]
    if dist.is_available() and dist.is_initialized():
        gathered: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, records)
        records = [record for part in gathered for record in part]
    return records


def evaluate(model, benchmark: str, shards: str | list[str], out: str | Path, batch_size: int = 8,
             cost_samples: int = 4, trainer: Any = None) -> EvalResult:
    """Greedy answers for every sample (exact pass), the benchmark's metric, files under ``out``.

    With a ``trainer`` (e.g. DDP over several devices or nodes) each rank answers its share of the shards and
    the records are gathered on every rank; rank 0 writes the files. Without one, it runs in this process.
    """
    spec = get_benchmark(benchmark)
    urls = _urls(shards)
    out = Path(out)
    model.max_new_tokens = spec.max_new_tokens
    data = ShardDataModule(predict=urls, batch_size=batch_size)
    data.attach(model)
    model.eval()
    records, first_batch = [], None
    if trainer is not None:
        records = _predict_distributed(model, data, trainer)
        cost_samples = 0  # per-sample cost is measured in a single process
    else:
        for index, batch in enumerate(data.predict_dataloader()):
            batch = move_data_to_device(batch, model.device)
            first_batch = batch if first_batch is None else first_batch
            with torch.inference_mode(model.object_annotator is None):  # online MaskInversion needs autograd
                records.extend(model.predict_step(batch, index))
    writer = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    references = load_records(urls)
    matched = [references[r["key"]] for r in records]
    predictions = [r["prediction"] for r in records]
    scores: dict[str, float] = {}
    if spec.metric is not None:
        metric = spec.metric()
        spec.update(metric, predictions, matched)
        scores = _flatten(metric.compute())
    predictions_file = out / f"{benchmark}_predictions.jsonl"
    export_file = None
    if writer:
        with predictions_file.open("w") as f:
            for record, ref in zip(records, matched, strict=True):
                f.write(json.dumps({"id": ref["id"], "prediction": record["prediction"], "answer": record["answer"]}) + "\n")
        export_file = spec.export(out, predictions, matched) if spec.export is not None else None
    cost = None
    if cost_samples and first_batch is not None:
        with torch.inference_mode(model.object_annotator is None):
            cost = measure_cost(model, first_batch, cost_samples)
    mean_tokens = sum(r["visual_tokens"] for r in records) / max(1, len(records))
    return EvalResult(benchmark, scores, len(records), mean_tokens, records, cost, predictions_file, export_file)

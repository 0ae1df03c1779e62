"""``evaluate``: one model on one benchmark's shards -> predictions file, server answer file, scores, cost.

Order matters: predictions are written as they are made (and the server file right after), before anything
is scored, so a scoring problem never loses them. Bad data is counted, named and reported (``report``), never
fatal: a shard given twice is read once, a damaged shard keeps what was read, a record that cannot be scored
is left out. A benchmark without reference answers (a server split) is exported and not scored.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed as dist
from lightning.fabric.utilities.apply_func import move_data_to_device

from tokencompose.data.datamodule import ShardDataModule, _urls
from tokencompose.eval.benchmarks import Benchmark, get_benchmark
from tokencompose.eval.cost import Cost, measure_cost
from tokencompose.eval.records import Tally, load_records, unique_shards
from tokencompose.eval.scorers import NO_REFERENCES, Scorer
from tokencompose.progress import meter

log = logging.getLogger(__name__)

__all__ = ["EvalResult", "evaluate", "load_records", "score"]


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
    report: dict[str, Any] = field(default_factory=dict)  # shards, scored count, issues by reason (scores.json)


def _flatten(scores: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(scores, dict):
        out: dict[str, float] = {}
        for k, v in scores.items():
            out.update(_flatten(v, f"{prefix}{k}/" if prefix or len(scores) > 1 else f"{k}/"))
        return {k.rstrip("/"): v for k, v in out.items()}
    return {prefix.rstrip("/") or "score": float(scores)}


class PredictionWriter:
    """``<benchmark>_predictions.jsonl``, one line per sample key (the first prediction of a key wins), flushed
    after every batch so that what was predicted survives a crash later in the pass."""

    def __init__(self, file: IO[str] | None, references: dict[str, dict[str, Any]]) -> None:
        self.file, self.references, self.records = file, references, {}

    def add(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            if record["key"] in self.records:
                continue  # the same sample in two shards: already counted when the references were read
            self.records[record["key"]] = record
            if self.file is not None:
                ref_id = self.references.get(record["key"], {}).get("id", record["key"])
                self.file.write(json.dumps({"id": ref_id, "key": record["key"], "prediction": record["prediction"],
                                            "answer": record["answer"]}) + "\n")
        if self.file is not None:
            self.file.flush()


def _predict_distributed(model, data: ShardDataModule, trainer) -> list[dict[str, Any]]:
    """Each rank predicts its exact share of the shards; every rank gets all records back."""
    batches = trainer.predict(model, datamodule=data, return_predictions=True) or []
    records = [record for batch in batches for record in batch]
    if dist.is_available() and dist.is_initialized():
        gathered: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, records)
        records = [record for part in gathered for record in part]
    return records


def _predict_local(model, data: ShardDataModule, writer: PredictionWriter, samples: int, desc: str) -> Any:
    """Answers batch by batch in this process, each batch written at once, progress shown against ``samples``.
    Returns the first batch (for cost)."""
    first_batch = None
    with meter(samples, desc, unit="sample") as progress:
        for index, batch in enumerate(data.predict_dataloader()):
            batch = move_data_to_device(batch, model.device)
            first_batch = batch if first_batch is None else first_batch
            with torch.inference_mode(not model.needs_autograd):  # online MaskInversion needs autograd
                writer.add(model.predict_step(batch, index))
            progress.update(len(batch))
    return first_batch


def _has(record: dict[str, Any], path: tuple[str, ...]) -> bool:
    value: Any = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


def _export(spec: Benchmark, out: Path, pairs: list[tuple[dict[str, Any], dict[str, Any]]], tally: Tally) -> Path | None:
    if spec.export is None:
        return None
    rows = [(r, ref) for r, ref in pairs if _has(ref, spec.export_needs)]
    for r, ref in pairs:
        if not _has(ref, spec.export_needs):
            tally.add(f"missing field '{'.'.join(spec.export_needs)}' (left out of the server file)", str(ref.get("id", r["key"])))
    return spec.export(out, [r["prediction"] for r, _ in rows], [ref for _, ref in rows])


def score(scorer: Scorer, pairs: list[tuple[dict[str, Any], dict[str, Any]]], tally: Tally) -> tuple[dict[str, float], int]:
    """The scorer's metrics over (prediction record, shard record) pairs it can score; the others are counted
    in ``tally`` by reason. Returns (flattened scores, records scored); no scores when none can be scored."""
    predictions, matched = [], []
    for record, reference in pairs:
        issue = scorer.check(reference)
        if issue is not None:
            tally.add(issue.reason, str(reference.get("id", record["key"])))
            if not issue.scored:
                continue
        predictions.append(record["prediction"])
        matched.append(reference)
    if not matched:
        return {}, 0
    metric = scorer.metric()
    scorer.update(metric, predictions, matched)
    return _flatten(metric.compute()), len(matched)


def evaluate(model, benchmark: str, shards: str | list[str], out: str | Path, batch_size: int = 8,
             cost_samples: int = 4, trainer: Any = None, scorer: Scorer | None = None) -> EvalResult:
    """Greedy answers for every sample (exact pass), the benchmark's official scorer (or ``scorer``), files
    under ``out``: predictions (written as made), the server answer file, then scores.

    With a ``trainer`` (e.g. DDP over several devices or nodes) each rank answers its share of the shards and
    the records are gathered on every rank; rank 0 writes the files. Without one, it runs in this process.
    """
    spec = get_benchmark(benchmark)
    scorer = scorer if scorer is not None else spec.scorer
    out, tally = Path(out), Tally()
    urls = unique_shards(_urls(shards), tally)
    if not urls:
        raise ValueError(f"evaluate({benchmark!r}): no shards in {shards!r}")
    references = load_records(urls, tally)
    is_writer = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    predictions_file = out / f"{benchmark}_predictions.jsonl"
    if is_writer:
        out.mkdir(parents=True, exist_ok=True)
    model.max_new_tokens = spec.max_new_tokens
    data = ShardDataModule(predict=urls, batch_size=batch_size, transform=model.data_transform())
    model.eval()
    first_batch = None
    with predictions_file.open("w") if is_writer else nullcontext() as file:
        writer = PredictionWriter(file, references)
        if trainer is not None:
            writer.add(_predict_distributed(model, data, trainer))
            cost_samples = 0  # per-sample cost is measured in a single process
        else:
            first_batch = _predict_local(model, data, writer, len(references), f"eval {benchmark}")
    records = list(writer.records.values())
    for key in references.keys() - writer.records.keys():
        tally.add("sample not predicted (skipped while reading; see the log)", str(references[key].get("id", key)))
    pairs = []
    for record in records:
        if record["key"] in references:
            pairs.append((record, references[record["key"]]))
        else:
            tally.add("prediction without a shard record", record["key"])
    export_file = _export(spec, out, pairs, tally) if is_writer else None
    scores, scored = score(scorer, pairs, tally) if scorer is not None else ({}, 0)
    if scorer is not None and not scored:
        log.warning("%s: nothing scored (%s)%s", benchmark, ", ".join(tally.counts) or "no predictions",
                    f"; server answers in {export_file}" if export_file and NO_REFERENCES in tally.counts else "")
    tally.log(benchmark)
    cost = None
    if cost_samples and first_batch is not None:
        with torch.inference_mode(not model.needs_autograd):
            cost = measure_cost(model, first_batch, cost_samples)
    mean_tokens = sum(r["visual_tokens"] for r in records) / max(1, len(records))
    report = {"shards": len(urls), "predicted": len(records), "scored": scored,
              "scorer": scorer.name if scorer else None, "follows": scorer.follows if scorer else None,
              "issues": tally.as_dict()}
    return EvalResult(benchmark, scores, len(records), mean_tokens, records, cost, predictions_file, export_file, report)


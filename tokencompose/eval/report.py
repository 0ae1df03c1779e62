"""Summaries of prediction records (from ``VLM.predict_step``): accuracy per question type, tokens, latency."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tokencompose.eval.cost import Cost
from tokencompose.model import normalise_answer


@dataclass
class SchemeResult:
    scheme: str
    token_slots: int
    mean_visual_tokens: float
    accuracy: dict[str, float]  # per question type, plus "all"
    ms_per_sample: float  # batched prediction wall time per sample
    cost: Cost | None = None  # per-sample split at batch size 1


def summarise(scheme: str, token_slots: int, records: list[dict[str, Any]]) -> SchemeResult:
    """Prediction records -> one row of the results table."""
    if not records:
        raise ValueError(f"{scheme}: no predictions to summarise")
    hits: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        correct = normalise_answer(record["prediction"]) == normalise_answer(record["answer"])
        hits[record["question_type"]].append(correct)
        hits["all"].append(correct)
    return SchemeResult(
        scheme=scheme,
        token_slots=token_slots,
        mean_visual_tokens=sum(r["visual_tokens"] for r in records) / len(records),
        accuracy={k: sum(v) / len(v) for k, v in hits.items()},
        ms_per_sample=1000 * sum(r["seconds"] for r in records) / len(records),
    )


def format_table(results: list[SchemeResult]) -> str:
    """Results -> a Markdown table (scheme, visual tokens, accuracy per question type, latency)."""
    types = sorted({k for r in results for k in r.accuracy if k != "all"}) + ["all"]
    with_cost = all(r.cost is not None for r in results)
    header = ["scheme", "visual tokens / image (slots)", *[f"acc {t}" for t in types], "ms / sample"]
    header += ["TTFT ms (batch 1, median)", "prefill MFLOPs"] if with_cost else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        accuracy = [f"{100 * r.accuracy.get(t, float('nan')):.1f}" for t in types]
        row = [r.scheme, f"{r.mean_visual_tokens:.1f} ({r.token_slots})", *accuracy, f"{r.ms_per_sample:.2f}"]
        if with_cost:
            row += [f"{r.cost.ttft_ms.median:.2f}", f"{1000 * r.cost.gflops.get('prefill', 0.0):.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)

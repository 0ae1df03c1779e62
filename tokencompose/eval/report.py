"""Summaries of prediction records (from ``VLM.predict_step``): accuracy per question type, tokens, latency."""

from __future__ import annotations

import os
import platform
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
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


def machine_description() -> str:
    """This machine in one line: CPU model and cores, the GPU if torch sees one, OS, Python and torch versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # Linux names the model here; platform.processor() is often empty or just the ISA
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = models[0] if models else cpu
    parts = [f"{cpu}, {os.cpu_count()} cores"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    parts += [f"{platform.system()} {platform.release()}", f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    return "; ".join(parts)


def provenance(command: str, when: datetime | None = None) -> str:
    """The line written above a measured table: which command made it, when (UTC) and on which machine."""
    when = when or datetime.now(timezone.utc)
    return f"Measured by `{command}` on {when:%Y-%m-%d %H:%M} UTC; machine: {machine_description()}."

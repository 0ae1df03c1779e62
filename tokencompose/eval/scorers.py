"""Which official scorer each benchmark's numbers reproduce, and how a prediction record is checked and scored.

A ``Scorer`` names the code it follows (repository, path, commit), builds its metric, feeds it predictions
with their shard records, and ``check``s each record first: a record that cannot be scored (a missing field,
no reference answers on a server split, a gold answer outside the benchmark's labels) is left out and counted
by the runner; one the official code would still score is scored the same way and only reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torchmetrics import Metric

from tokencompose.eval.metrics import (
    MME_SUBTASKS,
    CircularAccuracy,
    ExactMatch,
    MMEScore,
    OptionAccuracy,
    POPEMetrics,
    VQAAccuracy,
)
from tokencompose.eval.normalize import textvqa_accuracy, vizwiz_accuracy, vqa_accuracy, vqa_accuracy_2016
from tokencompose.eval.parsing import gqa_prediction, normalize_exact

NO_REFERENCES = "no reference answers"  # a server split (VQAv2 test-dev, VizWiz test): exported, not scored


@dataclass(frozen=True)
class Issue:
    """Why a record is not scored (``scored=False``) or is scored as the official code would but looks wrong."""

    reason: str
    scored: bool = False


@dataclass(frozen=True)
class Scorer:
    """name: short label; follows: the official code reproduced (repository, path, commit)."""

    name: str
    follows: str
    metric: Callable[[], Metric]
    update: Callable[[Metric, list[str], list[dict[str, Any]]], None]
    check: Callable[[dict[str, Any]], Issue | None]


def _field(record: dict[str, Any], *path: str) -> Any:
    """record[path[0]][path[1]]...; KeyError naming the dotted field when absent."""
    value: Any = record
    for i, key in enumerate(path):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(".".join(path[: i + 1]))
        value = value[key]
    return value


def _missing(record: dict[str, Any], *fields: tuple[str, ...]) -> Issue | None:
    for path in fields:
        try:
            _field(record, *path)
        except KeyError as error:
            return Issue(f"missing field '{error.args[0]}'")
    return None


# ---------------------------------------------------------------------------------------------- checks
def _check_answers(record: dict[str, Any], count: int | None = None) -> Issue | None:
    if issue := _missing(record, ("references",)):
        return issue
    answers = record["references"]
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        return Issue("references are not a list of strings")
    if not answers:
        return Issue(NO_REFERENCES)
    if count is not None and len(answers) != count:
        return Issue(f"needs {count} reference answers")
    return None


def _check_label(record: dict[str, Any]) -> Issue | None:
    if issue := _missing(record, ("references",)):
        return issue
    label = record["references"]
    if not isinstance(label, str):  # NaN, null, a number: eval_pope.py counts it positive (it is not 'no')
        return Issue("label is not a string (e.g. NaN): scored positive, as eval_pope.py", scored=True)
    if label not in ("yes", "no"):
        return Issue("label is neither 'yes' nor 'no': scored positive unless exactly 'no', as eval_pope.py",
                     scored=True)
    return None


def _check_mme(record: dict[str, Any]) -> Issue | None:
    if issue := _missing(record, ("references",), ("meta", "subtask"), ("meta", "image")):
        return issue
    if not isinstance(record["references"], str) or record["references"].lower() not in ("yes", "no"):
        return Issue("MME answer is not yes/no")
    if record["meta"]["subtask"] not in MME_SUBTASKS:
        return Issue("unknown MME subtask")
    return None


def _check_letter(record: dict[str, Any], *meta: str) -> Issue | None:
    if issue := _missing(record, ("references",), ("meta", "num_options"), *(("meta", m) for m in meta)):
        return issue
    if record["references"] in ("", None):
        return Issue(NO_REFERENCES)
    return None if isinstance(record["references"], str) else Issue("answer letter is not a string")


def _check_exact(record: dict[str, Any]) -> Issue | None:
    if issue := _missing(record, ("references",)):
        return issue
    if not isinstance(record["references"], str):
        return Issue("reference answer is not a string")
    return None if record["references"] else Issue(NO_REFERENCES)


def _check_shapes(record: dict[str, Any]) -> Issue | None:
    if isinstance(record.get("references"), str):
        return None
    turns = record.get("conversations")
    return None if isinstance(turns, list) and turns and isinstance(turns[-1], dict) and "value" in turns[-1] \
        else Issue("missing field 'conversations'")


# ---------------------------------------------------------------------------------------------- updates
def _answers(metric: Metric, preds: list[str], records: list[dict[str, Any]]) -> None:
    metric.update(preds, [r["references"] for r in records])


def _mme(metric: Metric, preds: list[str], records: list[dict[str, Any]]) -> None:
    metric.update(preds, [r["references"] for r in records], [r["meta"]["subtask"] for r in records],
                  [r["meta"]["image"] for r in records])


def _options(metric: Metric, preds: list[str], records: list[dict[str, Any]]) -> None:
    metric.update(preds, [r["references"] for r in records], [r["meta"]["num_options"] for r in records])


def _circular(metric: Metric, preds: list[str], records: list[dict[str, Any]]) -> None:
    metric.update(preds, [r["references"] for r in records], [r["meta"]["num_options"] for r in records],
                  [r["meta"]["question"] for r in records])


def _shapes(metric: Metric, preds: list[str], records: list[dict[str, Any]]) -> None:
    metric.update(preds, [r["references"] if isinstance(r.get("references"), str) else r["conversations"][-1]["value"]
                          for r in records])


# ---------------------------------------------------------------------------------------------- scorers
VQAV2 = Scorer(
    "vqa-2021", "GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py @ a013f00 (2021)",
    lambda: VQAAccuracy(vqa_accuracy), _answers, _check_answers,
)
VQAV2_2016 = Scorer(
    "vqa-2016", "GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py @ c4e6a0e (before the 2021 fix)",
    lambda: VQAAccuracy(vqa_accuracy_2016), _answers, _check_answers,
)
TEXTVQA = Scorer(
    "textvqa-m4c", "haotian-liu/LLaVA llava/eval/eval_textvqa.py @ 524a75b -> m4c_evaluator.TextVQAAccuracyEvaluator",
    lambda: VQAAccuracy(textvqa_accuracy), _answers, lambda r: _check_answers(r, 10),
)
VIZWIZ = Scorer(
    "vizwiz-vqa", "VizWiz VQA API vqaEval.py (vizwiz.org; the EvalAI server's scorer)",
    lambda: VQAAccuracy(vizwiz_accuracy), _answers, _check_answers,
)
GQA = Scorer(
    "gqa-exact", "haotian-liu/LLaVA scripts/convert_gqa_for_eval.py @ a689fd8, then GQA eval.py (exact match)",
    lambda: ExactMatch(prediction=gqa_prediction), _answers, _check_exact,
)
POPE = Scorer(
    "pope", "AoiDragon/POPE evaluate.py @ f3ec604 (= haotian-liu/LLaVA llava/eval/eval_pope.py @ 4241f08)",
    POPEMetrics, _answers, _check_label,
)
MME = Scorer(
    "mme", "MME eval_tool/calculation.py (BradyFU/Awesome-Multimodal-Large-Language-Models, Evaluation branch)",
    MMEScore, _mme, _check_mme,
)
SCIENCEQA = Scorer(
    "scienceqa-img", "haotian-liu/LLaVA llava/eval/eval_science_qa.py (LLaVA-1.5), IMG subset",
    OptionAccuracy, _options, _check_letter,
)
MMBENCH = Scorer(
    "mmbench-circular", "ours: MMBench's circular rule with eval_science_qa.py's letter parsing (the official "
    "number needs the MMBench server's LLM-assisted matching)",
    CircularAccuracy, _circular, lambda r: _check_letter(r, "question"),
)
SHAPES = Scorer(
    "shapes-exact", "ours: normalised exact match", lambda: ExactMatch(normalize_exact, normalize_exact), _shapes,
    _check_shapes,
)

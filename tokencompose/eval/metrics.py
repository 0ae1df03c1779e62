"""Benchmark metrics as torchmetrics ``Metric``s: states are sums or concatenated tensors, so they are correct
under distributed synchronisation (each rank updates with its own samples, ``compute`` sees all)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import Metric

from tokencompose.eval.normalize import vqa_accuracy
from tokencompose.eval.parsing import (
    parse_option_letter,
    parse_yes_no_mme,
    parse_yes_no_pope,
    pope_label_is_positive,
)


def _same(text: str) -> str:
    return text


class VQAAccuracy(Metric):
    """Mean per-question VQA accuracy, in %. ``accuracy`` is the official per-question rule of the benchmark
    (``normalize.vqa_accuracy`` for VQAv2 2021, ``vqa_accuracy_2016``, ``textvqa_accuracy``,
    ``vizwiz_accuracy``). update(preds, answers)."""

    full_state_update = False

    def __init__(self, accuracy: Callable[[str, list[str]], float] = vqa_accuracy) -> None:
        super().__init__()
        self.accuracy = accuracy
        self.add_state("score", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predictions: list[str], answers: list[list[str]]) -> None:
        for prediction, references in zip(predictions, answers, strict=True):
            self.score += self.accuracy(prediction, references)
            self.count += 1

    def compute(self) -> Tensor:
        return 100 * self.score / self.count.clamp(min=1)


class ExactMatch(Metric):
    """Accuracy of ``prediction(pred) == reference(answer)``, in %: GQA passes LLaVA's
    ``parsing.gqa_prediction`` and compares with the raw gold answer (official ``eval.py``); the synthetic
    shapes task normalises both sides. update(preds, answers)."""

    full_state_update = False

    def __init__(self, prediction: Callable[[str], str] = _same, reference: Callable[[str], str] = _same) -> None:
        super().__init__()
        self.prediction, self.reference = prediction, reference
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predictions: list[str], answers: list[str]) -> None:
        for prediction, answer in zip(predictions, answers, strict=True):
            self.correct += int(self.prediction(prediction) == self.reference(answer))
            self.count += 1

    def compute(self) -> Tensor:
        return 100 * self.correct / self.count.clamp(min=1)


class POPEMetrics(Metric):
    """POPE accuracy, precision, recall, F1 ('yes' is positive) and yes-ratio, as ``eval_pope.py``: a gold
    label is negative only if it is exactly 'no'. update(preds, labels)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("tp", "fp", "tn", "fn"):
            self.add_state(name, default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predictions: list[str], labels: list[object]) -> None:
        for prediction, label in zip(predictions, labels, strict=True):
            yes, positive = parse_yes_no_pope(prediction) == "yes", pope_label_is_positive(label)
            self.tp += int(yes and positive)
            self.fp += int(yes and not positive)
            self.tn += int(not yes and not positive)
            self.fn += int(not yes and positive)

    def compute(self) -> dict[str, Tensor]:
        tp, fp, tn, fn = (getattr(self, n).double() for n in ("tp", "fp", "tn", "fn"))
        total = (tp + fp + tn + fn).clamp(min=1)
        precision = tp / (tp + fp).clamp(min=1)
        recall = tp / (tp + fn).clamp(min=1)
        return {
            "accuracy": 100 * (tp + tn) / total,
            "precision": 100 * precision,
            "recall": 100 * recall,
            "f1": 100 * 2 * precision * recall / (precision + recall).clamp(min=1e-12),
            "yes_ratio": 100 * (tp + fp) / total,
        }


MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
MME_SUBTASKS = MME_PERCEPTION + MME_COGNITION


def stable_id(text: str) -> int:
    """A process-independent 63-bit integer for a string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


class MMEScore(Metric):
    """MME as its ``eval_tool/calculation.py``: per subtask, accuracy (per question) and accuracy+ (both
    questions of an image right); score = acc * 100 + acc+ * 100; perception and cognition are sums of their
    subtasks' scores. All in float64, in calculation.py's order of operations. Each image must have exactly two
    questions. update(preds, answers yes/no, subtasks, images)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("subtask", "image", "correct"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.image_names: dict[int, str] = {}  # for error messages (this rank's images only)

    def update(self, predictions: list[str], answers: list[str], subtasks: list[str], images: list[str]) -> None:
        for prediction, answer, subtask, image in zip(predictions, answers, subtasks, images, strict=True):
            if subtask not in MME_SUBTASKS:
                raise ValueError(f"MMEScore: unknown subtask {subtask!r}; known: {list(MME_SUBTASKS)}")
            if answer.lower() not in ("yes", "no"):
                raise ValueError(f"MMEScore: the answer for {image!r} is {answer!r}; MME answers are yes or no")
            self.image_names[stable_id(image)] = image
            self.subtask.append(torch.tensor([MME_SUBTASKS.index(subtask)]))
            self.image.append(torch.tensor([stable_id(image)]))
            self.correct.append(torch.tensor([parse_yes_no_mme(prediction) == answer.lower()]))

    def compute(self) -> dict[str, float]:
        if not self.subtask:
            return {}
        cat = lambda s: s if isinstance(s, Tensor) else torch.cat(s)  # noqa: E731 - synced states arrive concatenated
        subtask, image, correct = cat(self.subtask), cat(self.image), cat(self.correct)
        scores: dict[str, float] = {}
        for index, name in enumerate(MME_SUBTASKS):
            mine = subtask == index
            if not mine.any():
                continue
            per_image: dict[int, list[bool]] = {}
            for img, ok in zip(image[mine].tolist(), correct[mine].tolist(), strict=True):
                per_image.setdefault(img, []).append(bool(ok))
            unpaired = {self.image_names.get(img, f"id {img}"): len(oks) for img, oks in per_image.items() if len(oks) != 2}
            if unpaired:
                shown = dict(list(unpaired.items())[:5])
                raise ValueError(f"MME {name}: each image needs exactly two questions (accuracy+ pairs them); "
                                 f"{len(unpaired)} image(s) have another count, e.g. {shown} (image: questions)")
            oks = [ok for pair in per_image.values() for ok in pair]
            accuracy = sum(oks) / len(oks)  # Python floats (float64), as sklearn's accuracy_score
            accuracy_plus = sum(all(pair) for pair in per_image.values()) / len(per_image)
            scores[name] = accuracy * 100 + accuracy_plus * 100  # calculation.py: task_score += v * 100, in turn
        scores["perception"] = sum(scores.get(n, 0.0) for n in MME_PERCEPTION)
        scores["cognition"] = sum(scores.get(n, 0.0) for n in MME_COGNITION)
        return scores


class OptionAccuracy(Metric):
    """ScienceQA-IMG: the parsed option letter equals the answer letter (unparseable = wrong).
    update(preds, answer letters, option counts)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predictions: list[str], answers: list[str], num_options: list[int]) -> None:
        for prediction, answer, n in zip(predictions, answers, num_options, strict=True):
            self.correct += int(parse_option_letter(prediction, n) == answer)
            self.count += 1

    def compute(self) -> Tensor:
        return 100 * self.correct / self.count.clamp(min=1)


class CircularAccuracy(Metric):
    """MMBench circular evaluation: a question counts only if every rotation of its options is answered right.
    update(preds, answer letters, option counts, question ids) — rotations share the question id."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("question", default=[], dist_reduce_fx="cat")
        self.add_state("correct", default=[], dist_reduce_fx="cat")

    def update(self, predictions: list[str], answers: list[str], num_options: list[int], questions: list[int]) -> None:
        for prediction, answer, n, question in zip(predictions, answers, num_options, questions, strict=True):
            self.question.append(torch.tensor([int(question)]))
            self.correct.append(torch.tensor([parse_option_letter(prediction, n) == answer]))

    def compute(self) -> Tensor:
        if not self.question:
            return torch.tensor(0.0)
        cat = lambda s: s if isinstance(s, Tensor) else torch.cat(s)  # noqa: E731
        question, correct = cat(self.question), cat(self.correct)
        groups: dict[int, bool] = {}
        for q, ok in zip(question.tolist(), correct.tolist(), strict=True):
            groups[q] = groups.get(q, True) and ok
        return torch.tensor(100 * sum(groups.values()) / len(groups))

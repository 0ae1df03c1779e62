import pytest
import torch

from tokencompose.eval.benchmarks import get_benchmark
from tokencompose.eval.metrics import (
    CircularAccuracy,
    MMEScore,
    OptionAccuracy,
    POPEMetrics,
    VQAAccuracy,
)
from tokencompose.eval.normalize import (
    normalize_vqa_answer,
    process_punctuation,
    vqa_accuracy,
    vqa_accuracy_2016,
)
from tokencompose.eval.parsing import parse_option_letter, parse_yes_no_mme, parse_yes_no_pope


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),  # number words become digits
        ("the dog", "dog"),  # articles dropped
        ("A red, big ball!", "red big ball"),  # punctuation next to a space is deleted
        ("dont", "don't"),  # contractions restored
        ("1,000", "1000"),  # a comma between digits is deleted (and every other punctuation mark with it)
        ("3.5", "3.5"),  # a decimal point stays
        ("yes.", "yes"),  # a final period goes
        ("black/white", "black white"),  # punctuation inside a word becomes a space
        ("  None\n", "0"),
    ],
)
def test_official_normalisation(raw, expected):
    assert normalize_vqa_answer(raw) == expected


def test_period_removal_is_capped_like_upstream():
    assert process_punctuation("." * 40) == "." * 8  # re.UNICODE lands in `count` upstream: 32 removed


def test_vqa_accuracy_leave_one_out():
    answers = ["2"] * 2 + ["3"] * 8
    # each leave-one-out subset of 9 holds one or two "2": min(k / 3, 1) averaged over the 10 subsets
    assert vqa_accuracy("two", answers) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert vqa_accuracy("3", answers) == pytest.approx(1.0)
    assert vqa_accuracy("yes", ["yes"] * 3 + ["no"] * 7) == pytest.approx((3 * (2 / 3) + 7 * 1) / 10)
    assert vqa_accuracy("unanswerable", ["unanswerable"] * 10) == 1.0  # VizWiz


def test_vqa_2016_references_are_only_punctuation_processed_when_they_disagree():
    # 2016 vqaEval.py: references agreeing exactly are compared as they are: "the dog" never matches "dog".
    assert vqa_accuracy_2016("the dog", ["the dog"] * 10) == 0.0
    # disagreeing references are punctuation-processed: "dog!" becomes "dog " (as upstream) and stops matching
    assert vqa_accuracy_2016("dog", ["dog"] * 2 + ["dog!"] * 8) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    # 2021: agreeing references are compared exactly with the (cleaned) prediction; disagreeing ones normalised
    assert vqa_accuracy("the dog", ["the dog"] * 10) == 1.0 and vqa_accuracy("dog", ["dog"] * 2 + ["dog!"] * 8) == 1.0


def test_vqa_metric_and_distributed_style_merge():
    a, b = VQAAccuracy(), VQAAccuracy()
    a.update(["2"], [["2"] * 10])
    b.update(["cat"], [["dog"] * 10])
    a.merge_state(b)
    assert a.compute().item() == pytest.approx(50.0)


def test_exact_match_gqa():
    metric = get_benchmark("gqa").scorer.metric()
    metric.update(["Yes.", "the table", "Left"], ["yes", "table", "left"])
    assert metric.compute().item() == pytest.approx(200 / 3)


def test_pope_parsing_and_metrics():
    assert parse_yes_no_pope("No, there is not.") == "no" and parse_yes_no_pope("Yes. No doubt") == "yes"
    assert parse_yes_no_pope("There is a dog") == "yes"
    metric = POPEMetrics()
    metric.update(["Yes", "yes", "No", "no", "Yes"], ["yes", "no", "no", "yes", "yes"])
    out = {k: v.item() for k, v in metric.compute().items()}
    # tp 2, fp 1, tn 1, fn 1
    assert out["accuracy"] == pytest.approx(60.0) and out["precision"] == pytest.approx(200 / 3)
    assert out["recall"] == pytest.approx(200 / 3) and out["f1"] == pytest.approx(200 / 3)
    assert out["yes_ratio"] == pytest.approx(60.0)


def test_mme_accuracy_plus_and_totals():
    assert parse_yes_no_mme("Yes, it is") == "yes" and parse_yes_no_mme("Nope") == "no"
    assert parse_yes_no_mme("maybe") == "other"
    metric = MMEScore()
    metric.update(
        ["Yes", "No", "Yes", "Yes", "no", "yes"],
        ["Yes", "No", "Yes", "No", "No", "Yes"],
        ["color", "color", "color", "color", "code_reasoning", "code_reasoning"],
        ["a.jpg", "a.jpg", "b.jpg", "b.jpg", "c.png", "c.png"],
    )
    scores = metric.compute()
    assert scores["color"] == pytest.approx(100 * (3 / 4 + 1 / 2))  # acc 3/4, acc+ 1 of 2 images
    assert scores["code_reasoning"] == pytest.approx(200.0)
    assert scores["perception"] == pytest.approx(scores["color"]) and scores["cognition"] == pytest.approx(200.0)
    with pytest.raises(ValueError, match="unknown subtask"):
        metric.update(["yes"], ["yes"], ["colour"], ["x"])


def test_option_parsing_and_scienceqa_accuracy():
    assert parse_option_letter("B", 3) == "B" and parse_option_letter("C. a fox", 3) == "C"
    assert parse_option_letter("The answer is A.", 2) == "A" and parse_option_letter("D", 3) is None
    assert parse_option_letter("I think so", 4) is None
    metric = OptionAccuracy()
    metric.update(["A", "The answer is B.", "zebra"], ["A", "C", "B"], [2, 3, 3])
    assert metric.compute().item() == pytest.approx(100 / 3)


def test_mmbench_circular_needs_every_rotation_right():
    metric = CircularAccuracy()
    metric.update(["A", "B", "C", "A", "D"], ["A", "B", "C", "A", "C"], [4] * 5, [1, 1, 1, 2, 2])
    assert metric.compute().item() == pytest.approx(50.0)


def test_metric_states_sum_across_ranks():
    """What DDP sync does: the same states from two ranks are reduced (sum / cat) before compute."""
    ranks = [POPEMetrics(), POPEMetrics()]
    ranks[0].update(["yes"], ["yes"])
    ranks[1].update(["no"], ["yes"])
    merged = POPEMetrics()
    for name in ("tp", "fp", "tn", "fn"):
        setattr(merged, name, sum(getattr(r, name) for r in ranks))
    assert merged.compute()["recall"].item() == pytest.approx(50.0)
    assert torch.is_tensor(merged.compute()["f1"])

"""Our scorers against re-implementations of the official ones, on a table of tricky answers.

Each ``ref_*`` below is the REFERENCE: written for this test from reading the official file it names (same
steps, same order, same quirks, the upstream variable names kept), never imported from tokencompose. Only the
long contractions table is shared (``CONTRACTIONS``); a separate test checks its upstream quirks.
"""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest

from tokencompose.eval.benchmarks import get_benchmark
from tokencompose.eval.metrics import MMEScore, OptionAccuracy, POPEMetrics
from tokencompose.eval.normalize import (
    CONTRACTIONS,
    evalai_answer,
    textvqa_accuracy,
    vizwiz_accuracy,
    vqa_accuracy,
    vqa_accuracy_2016,
)
from tokencompose.eval.parsing import gqa_prediction, parse_option_letter, parse_yes_no_mme

# ================================================================================ REFERENCE: vqaEval.py
# GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py: the tables are the same at c4e6a0e4e84b
# (2016-17) and a013f0043c1e2cdc995922dfe257f7149aa9af06 (2021, "Fixed processing answers bug").
REF_MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                  "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
REF_ARTICLES = ["a", "an", "the"]
REF_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
REF_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
REF_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]


def ref_process_punctuation(inText, commaStrip=REF_COMMA_STRIP):
    outText = inText
    for p in REF_PUNCT:
        if (p + " " in inText or " " + p in inText) or (re.search(commaStrip, inText) is not None):
            outText = outText.replace(p, "")
        else:
            outText = outText.replace(p, " ")
    outText = REF_PERIOD_STRIP.sub("", outText, re.UNICODE)
    return outText


def ref_process_digit_article(inText):
    manualMap = dict(REF_MANUAL_MAP)
    outText = []
    tempText = inText.lower().split()
    for word in tempText:
        word = manualMap.setdefault(word, word)
        if word not in REF_ARTICLES:
            outText.append(word)
    for wordId, word in enumerate(outText):
        if word in CONTRACTIONS:
            outText[wordId] = CONTRACTIONS[word]
    return " ".join(outText)


def _gts(answers):
    # The annotation answer dicts differ by answer_id, so `item != gtAnsDatum` leaves exactly one out.
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]


def _ref_leave_one_out(gts, resAns):
    gtAcc = []
    for gtAnsDatum in gts:
        otherGTAns = [item for item in gts if item != gtAnsDatum]
        matchingAns = [item for item in otherGTAns if item["answer"] == resAns]
        acc = min(1, float(len(matchingAns)) / 3)
        gtAcc.append(acc)
    return float(sum(gtAcc)) / len(gtAcc)


def ref_vqa_2021(prediction, answers):
    """VQAEval.evaluate @ a013f00, for one question."""
    gts = _gts(answers)
    for ansDic in gts:
        ansDic["answer"] = ansDic["answer"].replace("\n", " ")
        ansDic["answer"] = ansDic["answer"].replace("\t", " ")
        ansDic["answer"] = ansDic["answer"].strip()
    resAns = prediction
    resAns = resAns.replace("\n", " ")
    resAns = resAns.replace("\t", " ")
    resAns = resAns.strip()
    gtAnswers = [ans["answer"] for ans in gts]
    if len(set(gtAnswers)) > 1:
        for ansDic in gts:
            ansDic["answer"] = ref_process_punctuation(ansDic["answer"])
            ansDic["answer"] = ref_process_digit_article(ansDic["answer"])
        resAns = ref_process_punctuation(resAns)
        resAns = ref_process_digit_article(resAns)
    return _ref_leave_one_out(gts, resAns)


def ref_vqa_2016(prediction, answers):
    """VQAEval.evaluate @ c4e6a0e, for one question."""
    gts = _gts(answers)
    resAns = prediction
    resAns = resAns.replace("\n", " ")
    resAns = resAns.replace("\t", " ")
    resAns = resAns.strip()
    resAns = ref_process_punctuation(resAns)
    resAns = ref_process_digit_article(resAns)
    gtAnswers = [ans["answer"] for ans in gts]
    if len(set(gtAnswers)) > 1:
        for ansDic in gts:
            ansDic["answer"] = ref_process_punctuation(ansDic["answer"])
    return _ref_leave_one_out(gts, resAns)


def ref_vizwiz(prediction, answers):
    """VizWiz VQA API vqaEval.py (Qing Li; the example code of vizwiz.org): answers are never processed."""
    gts = {"answers": [{"answer": a} for a in answers]}
    resAns = prediction
    resAns = resAns.replace("\n", " ")
    resAns = resAns.replace("\t", " ")
    resAns = resAns.strip()
    resAns = ref_process_punctuation(resAns)
    resAns = ref_process_digit_article(resAns)
    gtAcc = []
    for i, _ans in enumerate(gts["answers"]):
        otherGTAns = [item for j, item in enumerate(gts["answers"]) if i != j]
        matchingAns = [item for item in otherGTAns if item["answer"] == resAns]
        acc = min(1, float(len(matchingAns)) / 3)
        gtAcc.append(acc)
    return float(sum(gtAcc)) / len(gtAcc)


# ======================================================================= REFERENCE: m4c_evaluator.py
# haotian-liu/LLaVA llava/eval/m4c_evaluator.py (EvalAIAnswerProcessor, TextVQAAccuracyEvaluator), used by
# llava/eval/eval_textvqa.py @ 524a75b74254717057ee196b507668ebd314a280; the file itself is read from the stored
# copy EleanorZhu/FasterVLM llava/eval/m4c_evaluator.py @ 54bb17fd0156586c47cbc4c098ff115eec4de140.
REF_EVALAI_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")


def ref_evalai(item):
    item = item.lower()
    item = item.replace(",", "").replace("?", "").replace("'s", " 's")
    item = item.strip()  # word_tokenize
    item = item.replace("\n", " ").replace("\t", " ").strip()
    item = ref_process_punctuation(item, REF_EVALAI_COMMA_STRIP)
    item = ref_process_digit_article(item)
    return item


def ref_textvqa(prediction, raw_answers):
    answers = [ref_evalai(a) for a in raw_answers]
    assert len(answers) == 10
    gt_answers = list(enumerate(answers))
    unique_answer_scores = {}
    for unique_answer in set(answers):
        accs = []
        for gt_answer in gt_answers:
            other_answers = [item for item in gt_answers if item != gt_answer]
            matching_answers = [item for item in other_answers if item[1] == unique_answer]
            accs.append(min(1, float(len(matching_answers)) / 3))
        unique_answer_scores[unique_answer] = sum(accs) / len(accs)
    return unique_answer_scores.get(ref_evalai(prediction), 0.0)


# ============================================================================== the table of cases
TRICKY = [
    ("Yes", ["yes"] * 10),  # identical answers: exact and case-sensitive (2021) -> 0
    ("yes", ["yes"] * 10),
    ("Yes", ["yes"] * 9 + ["no"]),  # disagreeing answers: everything normalised
    ("2", ["two"] * 4 + ["three"] * 6),  # number words in the answers (2021 normalises them; 2016 did not)
    ("two", ["2"] * 10),
    ("Two", ["two"] * 3 + ["2"] * 7),
    ("the dog", ["dog"] * 10),  # articles
    ("the dog", ["dog"] * 5 + ["a dog"] * 5),
    ("an apple", ["apple"] * 3 + ["apples"] * 7),
    ("A", ["a"] * 10),
    ("dont", ["don't"] * 6 + ["no"] * 4),  # contractions
    ("doesnt", ["doesn't"] * 10),
    ("it's", ["it is"] * 5 + ["its"] * 5),
    ("1,000", ["1000"] * 5 + ["1,000"] * 5),  # punctuation inside numbers
    ("1,000", ["1,000"] * 10),
    ("3.5", ["3.5"] * 6 + ["4"] * 4),
    ("3,5", ["35"] * 6 + ["3 5"] * 4),
    ("2.", ["2"] * 10),  # a final period
    ("2.", ["2"] * 8 + ["3"] * 2),
    ("no.", ["no"] * 10),
    ("yes\n", ["yes"] * 10),  # newlines and tabs
    ("\tyes no", ["yes no"] * 7 + ["yes"] * 3),
    ("yes", ["yes\n"] * 5 + ["yes "] * 5),
    ("  none ", ["0"] * 5 + ["none"] * 5),
    ("red, white", ["red white"] * 5 + ["red and white"] * 5),
    ("black/white", ["black and white"] * 4 + ["black white"] * 6),
    ("black/white", ["black/white"] * 5 + ["black and white"] * 5),
    ("left-hand", ["left hand"] * 6 + ["left"] * 4),
    ("4:30", ["4:30"] * 5 + ["430"] * 5),
    ("yes", ["Yes"] * 5 + ["yes"] * 5),
    ("Unanswerable", ["unanswerable"] * 10),
    ("unanswerable", ["unanswerable"] * 9 + ["unsuitable"]),
    ("Coca-Cola", ["coca cola"] * 10),
    ("coca-cola", ["Coca-Cola"] * 10),
    ("Nike's", ["nike's"] * 10),
    ("what?", ["what"] * 6 + ["what?"] * 4),
    ("", ["yes"] * 10),
    ("." * 40, ["." * 8] * 5 + ["x"] * 5),  # upstream removes at most 32 periods
]
PREDICTIONS = ["Yes", "yes", "2", "two", "2.", "the dog", "dog", "1,000", "don't", "Coca-Cola", "yes\n", "  no"]
ANSWER_SETS = [
    ["yes"] * 10, ["Yes"] * 10, ["yes"] * 7 + ["no"] * 3, ["two"] * 4 + ["three"] * 6, ["2"] * 10, ["dog"] * 10,
    ["the dog"] * 5 + ["dog"] * 5, ["1000"] * 10, ["1,000"] * 6 + ["1000"] * 4, ["dont"] * 3 + ["don't"] * 7,
    ["coca-cola"] * 10, ["no"] * 10,
]
CASES = TRICKY + list(itertools.product(PREDICTIONS, ANSWER_SETS))


@pytest.mark.parametrize(("ours", "reference"), [
    (vqa_accuracy, ref_vqa_2021),
    (vqa_accuracy_2016, ref_vqa_2016),
    (textvqa_accuracy, ref_textvqa),
    (vizwiz_accuracy, ref_vizwiz),
], ids=["vqav2-2021", "vqav2-2016", "textvqa-m4c", "vizwiz"])
def test_vqa_family_equals_the_official_scorers_on_every_case(ours, reference):
    mismatches = [(p, a, ours(p, a), reference(p, a)) for p, a in CASES if ours(p, a) != reference(p, a)]
    assert not mismatches, f"{len(mismatches)} of {len(CASES)} cases differ: {mismatches[:5]}"


def test_the_issue_examples():
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0  # identical answers: exact, case-sensitive
    assert vqa_accuracy("2", ["two"] * 4 + ["three"] * 6) == 1.0  # answers normalised too (2016: 0)
    assert vqa_accuracy_2016("2", ["two"] * 4 + ["three"] * 6) == 0.0
    assert textvqa_accuracy("coca-cola", ["Coca-Cola"] * 10) == 1.0  # EvalAI processing on both sides
    assert vizwiz_accuracy("black/white", ["black/white"] * 5 + ["black and white"] * 5) == 0.0  # answers raw


def test_contractions_table_keeps_the_upstream_quirks():
    # vqaEval.py @ a013f00 (ASCII quotes; the first 2015 version had curly ones)
    assert CONTRACTIONS["dont"] == "don't" and CONTRACTIONS["couldnt've"] == "couldn't've"
    assert CONTRACTIONS["somebody'd"] == "somebodyd"  # upstream maps this one backwards
    assert CONTRACTIONS["Id've"] == "I'd've"  # never matched: words are lower-cased first
    assert CONTRACTIONS["twas"] == "'twas" and CONTRACTIONS["yall'll"] == "y'all'll"
    assert "he's" not in CONTRACTIONS and CONTRACTIONS["hes"] == "he's"


def test_evalai_processor_and_exports_as_llava_submissions(tmp_path):
    # haotian-liu/LLaVA scripts/convert_vqav2_for_submission.py @ a689fd8 and convert_vizwiz_for_submission.py
    # @ ce1aa08 apply EvalAIAnswerProcessor to each answer before writing the upload file.
    texts = ["Two dogs.", "It's 1,000!", "Coca-Cola?", "  The Red\tone\n", "what's"]
    assert [evalai_answer(t) for t in texts] == [ref_evalai(t) for t in texts]
    records = [{"id": str(i), "meta": {"question_id": i, "image": f"VizWiz_test_{i}.jpg"}} for i in range(len(texts))]
    vqav2 = json.loads(get_benchmark("vqav2").export(tmp_path, texts, records).read_text())
    vizwiz = json.loads(get_benchmark("vizwiz").export(tmp_path, texts, records).read_text())
    assert vqav2 == [{"question_id": i, "answer": ref_evalai(t)} for i, t in enumerate(texts)]
    assert vizwiz == [{"image": f"VizWiz_test_{i}.jpg", "answer": ref_evalai(t)} for i, t in enumerate(texts)]
    assert vqav2[0]["answer"] == "2 dogs"


# =============================================================================== REFERENCE: POPE
def ref_pope(answers, labels):
    """AoiDragon/POPE evaluate.py @ f3ec604337f1d1c9723ef8d01b4accacf8badb3d (the same as haotian-liu/LLaVA
    llava/eval/eval_pope.py @ 4241f08c6368f1c5bb28dc7c8be6cb19713e324a)."""
    answers = [{"answer": a} for a in answers]
    label_list = list(labels)
    for answer in answers:
        text = answer["answer"]
        if text.find(".") != -1:
            text = text.split(".")[0]
        text = text.replace(",", "")
        words = text.split(" ")
        answer["answer"] = "no" if ("No" in words or "not" in words or "no" in words) else "yes"
    for i in range(len(label_list)):
        label_list[i] = 0 if label_list[i] == "no" else 1
    pred_list = [0 if answer["answer"] == "no" else 1 for answer in answers]
    yes_ratio = pred_list.count(1) / len(pred_list)
    TP = sum(p == 1 and g == 1 for p, g in zip(pred_list, label_list, strict=True))
    FP = sum(p == 1 and g == 0 for p, g in zip(pred_list, label_list, strict=True))
    TN = sum(p == 0 and g == 0 for p, g in zip(pred_list, label_list, strict=True))
    FN = sum(p == 0 and g == 1 for p, g in zip(pred_list, label_list, strict=True))
    precision = float(TP) / float(TP + FP)
    recall = float(TP) / float(TP + FN)
    return {"accuracy": (TP + TN) / (TP + TN + FP + FN), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall), "yes_ratio": yes_ratio}


def test_pope_gold_labels_are_negative_only_when_exactly_no():
    labels = ["yes", "no", "No", "yes ", "NO", math.nan, None, "", "no ", "no", "yes", "no"]
    answers = ["Yes", "No.", "no", "There is not", "Yes, a dog.", "No", "yes", "No, no", "Yes", "yes", "No", "no"]
    metric = POPEMetrics()
    metric.update(answers, labels)
    ours = {k: v.item() / 100 for k, v in metric.compute().items()}
    assert ours == pytest.approx(ref_pope(answers, labels), abs=1e-12)


# ================================================================================ REFERENCE: MME
def ref_mme_parse(pred_ans):
    """MME eval_tool/calculation.py (BradyFU, Evaluation branch; stored copy zjunlp/Deco eval_tool/calculation.py
    @ a3ccc150b715373f3019fc07cb1836c1961d7e15): ``pred_ans = pred_ans.lower()`` then parse_pred_ans."""
    pred_ans = pred_ans.lower()
    if pred_ans in ["yes", "no"]:
        return pred_ans
    prefix_pred_ans = pred_ans[:4]
    if "yes" in prefix_pred_ans:
        return "yes"
    if "no" in prefix_pred_ans:
        return "no"
    return "other"


MME_RESPONSES = ["Yes", "yes", "  yes", " no", "No, it is not", "yes.", "nope", "Not sure", "maybe", "y", "",
                 "\nyes", "I think yes", "no\n", "Yes\n", "NO", " Yes, there is"]


@pytest.mark.parametrize("response", MME_RESPONSES)
def test_mme_first_four_characters_rule_reads_the_response_unstripped(response):
    assert parse_yes_no_mme(response) == ref_mme_parse(response)


def ref_mme_task_score(lines):
    """calculation.py's per-task loop: lines of (image, question, gt, pred), two per image, in order."""
    chunk_lines = [lines[i:i + 2] for i in range(0, len(lines), 2)]
    acc_plus_correct_num, gts, preds = 0, [], []
    for img_items in chunk_lines:
        assert len(img_items) == 2
        img_correct_num = 0
        for _img, _question, gt_ans, pred_ans in img_items:
            gt_ans, pred_ans = gt_ans.lower(), ref_mme_parse(pred_ans)
            gts.append(gt_ans)
            preds.append(pred_ans)
            img_correct_num += gt_ans == pred_ans
        acc_plus_correct_num += img_correct_num == 2
    acc = sum(g == p for g, p in zip(gts, preds, strict=True)) / len(gts)  # sklearn accuracy_score (float64)
    acc_plus = acc_plus_correct_num / len(chunk_lines)
    task_score = 0
    for v in (acc, acc_plus):  # metric_dict order: ..., "acc", then "acc_plus"
        task_score += v * 100
    return task_score


def test_mme_scores_are_float64_exactly_as_calculation_py():
    # 3 images, 2 of 6 right: acc = 1/3, where float32 drifts by ~1e-6 at the per-task score
    color = [("a.jpg", "q", "Yes", "no"), ("a.jpg", "q", "No", "no"), ("b.jpg", "q", "Yes", "yes"),
             ("b.jpg", "q", "No", "yes"), ("c.jpg", "q", "Yes", "no"), ("c.jpg", "q", "No", "yes")]
    count = [("d.jpg", "q", "Yes", "yes"), ("d.jpg", "q", "No", "no"), ("e.jpg", "q", "Yes", "Yes"),
             ("e.jpg", "q", "No", "  no"), ("f.png", "q", "No", "No"), ("f.png", "q", "Yes", "yes, it is")]
    metric = MMEScore()
    for task, lines in (("color", color), ("count", count)):
        metric.update([x[3] for x in lines], [x[2] for x in lines], [task] * len(lines), [f"{task}/{x[0]}" for x in lines])
    scores = metric.compute()
    expected = {"color": ref_mme_task_score(color), "count": ref_mme_task_score(count)}
    assert scores["color"] == expected["color"] and scores["count"] == expected["count"]  # exact, not approx
    assert scores["perception"] == sum(expected[t] for t in ("count", "color") if t in expected)  # MME_PERCEPTION order


def test_mme_needs_exactly_two_questions_per_image():
    metric = MMEScore()
    metric.update(["yes"] * 3, ["Yes", "No", "Yes"], ["color"] * 3, ["color/a.jpg"] * 3)
    with pytest.raises(ValueError, match=r"exactly two questions.*color/a.jpg"):
        metric.compute()


# ========================================================================= REFERENCE: ScienceQA
def ref_sqa_is_correct(pred_text, choices, answer_index, options=("A", "B", "C", "D", "E")):
    """haotian-liu/LLaVA llava/eval/eval_science_qa.py, LLaVA-1.5 version (stored copy
    locuslab/llava-token-compression llava/eval/eval_science_qa.py @ 986db5b0695bd42ae5aa84a9612bc9b60df8b552)."""
    options = list(options)
    if pred_text in options:
        answer = pred_text
    elif len(pred_text) >= 3 and pred_text[0] in options and pred_text[1:3] == ". ":
        answer = pred_text[0]
    else:
        pattern = re.compile(r"The answer is ([A-Z]).")
        res = pattern.findall(pred_text)
        answer = res[0] if len(res) == 1 else "FAILED"
    pred_idx = options.index(answer) if answer in options[:len(choices)] else -1  # get_pred_idx
    return pred_idx == answer_index


SQA_PREDICTIONS = ["A", "B", "C", "E", "A.", "A. cat", "A.cat", "(A)", "B)", "C: owl", "The answer is B.",
                   "The answer is B", "The answer is B. The answer is C.", "The answer is F.", " A", "a", "AB",
                   "I choose B", "The answer is C, because"]


@pytest.mark.parametrize("prediction", SQA_PREDICTIONS)
def test_scienceqa_letter_rule_equals_eval_science_qa(prediction):
    for answer in range(3):
        letter = chr(65 + answer)
        metric = OptionAccuracy()
        metric.update([prediction], [letter], [3])
        assert (metric.compute().item() == 100.0) == ref_sqa_is_correct(prediction, ["x", "y", "z"], answer)
    assert (parse_option_letter(prediction, 3) is None) == all(
        not ref_sqa_is_correct(prediction, ["x", "y", "z"], i) for i in range(3))


# =============================================================================== REFERENCE: GQA
def ref_gqa_correct(text, gold):
    """haotian-liu/LLaVA scripts/convert_gqa_for_eval.py @ a689fd8c73e7d3cdaf5cb8f5a0686f1dbe2c4afc
    (``res['text'].rstrip('.').lower()``), then GQA's eval.py: ``correct = (predicted == gold)``."""
    predicted = text.rstrip(".").lower()
    return predicted == gold


@pytest.mark.parametrize(("prediction", "gold"), [
    ("Yes.", "yes"), ("yes..", "yes"), ("Left", "left"), ("the table", "table"), ("Table.", "table"),
    ("no", "No"), ("3.", "3"), ("yes ", "yes"), ("traffic light", "traffic light"),
])
def test_gqa_equals_llava_conversion_and_exact_match(prediction, gold):
    assert gqa_prediction(prediction) == prediction.rstrip(".").lower()
    metric = get_benchmark("gqa").scorer.metric()
    metric.update([prediction], [gold])
    assert (metric.compute().item() == 100.0) == ref_gqa_correct(prediction, gold)


def test_each_benchmark_names_its_official_scorer():
    follows = {name: get_benchmark(name).scorer.follows for name in
               ("vqav2", "vqav2_2016", "textvqa", "vizwiz", "gqa", "pope", "mme", "scienceqa", "mmbench")}
    assert "a013f00" in follows["vqav2"] and "c4e6a0e" in follows["vqav2_2016"]
    assert "m4c_evaluator" in follows["textvqa"] and "VizWiz" in follows["vizwiz"]
    assert "convert_gqa_for_eval" in follows["gqa"] and "eval_pope" in follows["pope"]
    assert "calculation.py" in follows["mme"] and "eval_science_qa" in follows["scienceqa"]
    assert follows["mmbench"].startswith("ours")
    # the scorer each uses is the per-question rule it names: one case tells them apart
    case = ("coca-cola", ["Coca-Cola"] * 10)
    for name, rule in (("vqav2", vqa_accuracy), ("vqav2_2016", vqa_accuracy_2016), ("textvqa", textvqa_accuracy),
                       ("vizwiz", vizwiz_accuracy)):
        metric = get_benchmark(name).scorer.metric()
        metric.update([case[0]], [case[1]])
        assert metric.compute().item() == pytest.approx(100 * rule(*case))
    assert {vqa_accuracy(*case), textvqa_accuracy(*case)} == {0.0, 1.0}

"""The official VQA-family answer normalisations and per-question accuracies, reproduced exactly.

Four official scorers share one table of rules (punctuation, periods, number words, articles, contractions) but
apply it differently; each has its own function here:

- ``vqa_accuracy``: VQAv2, GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` at a013f00
  (2021, "Fixed processing answers bug"): normalise the prediction *and* every answer, only when the answers
  are not all identical; otherwise compare exactly (case-sensitive).
- ``vqa_accuracy_2016``: the same file at c4e6a0e (the version some published numbers use): always normalise
  the prediction; punctuation-process (only) the answers when they disagree.
- ``textvqa_accuracy``: LLaVA ``llava/eval/m4c_evaluator.py`` ``TextVQAAccuracyEvaluator``: ``EvalAIAnswerProcessor``
  on the prediction and on every answer.
- ``vizwiz_accuracy``: the VizWiz VQA API's ``vqaEval.py`` (Qing Li): normalise the prediction, never the answers.

Every one averages ``min(#matches among the other 9 / 3, 1)`` over the leave-one-out subsets (by position).

Two upstream quirks are kept on purpose, because scores must match the servers': the period pattern's
``(?!<=\\d)`` is a lookahead (not the intended lookbehind), and ``periodStrip.sub`` receives ``re.UNICODE`` as
its *count* argument, so at most 32 periods are removed.
"""

from __future__ import annotations

import re

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've",
    "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
PUNCTUATION = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
EVALAI_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")  # m4c_evaluator's variant of COMMA_STRIP


def process_punctuation(text: str, comma_strip: re.Pattern[str] = COMMA_STRIP) -> str:
    """``processPunctuation``: a mark next to a space (or any mark, when a comma sits between digits) is
    deleted, otherwise replaced by a space; then periods not followed by a digit are removed."""
    out = text
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or re.search(comma_strip, text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, re.UNICODE)  # re.UNICODE (32) lands in `count`, as upstream


def process_digit_article(text: str) -> str:
    """``processDigitArticle``: lower case, number words to digits, articles dropped, contractions restored."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def clean_whitespace(text: str) -> str:
    """Newlines and tabs become spaces, then surrounding space goes (every scorer does this first)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa_answer(text: str) -> str:
    """A prediction as ``vqaEval.py`` normalises it: whitespace cleaned, punctuation, digits and articles."""
    return process_digit_article(process_punctuation(clean_whitespace(text)))


def evalai_answer(text: str) -> str:
    """``EvalAIAnswerProcessor.__call__`` (LLaVA ``m4c_evaluator.py``, from MMF): lower case, ',' and '?'
    deleted, "'s" split off, then whitespace, punctuation, digits and articles as ``vqaEval.py``."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return process_digit_article(process_punctuation(clean_whitespace(text), EVALAI_COMMA_STRIP))


def leave_one_out(prediction: str, answers: list[str]) -> float:
    """min(#matches among the other answers / 3, 1), averaged over the leave-one-out subsets (by position)."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one reference answer; got none")
    scores = []
    for i in range(len(answers)):
        matches = sum(a == prediction for j, a in enumerate(answers) if j != i)
        scores.append(min(1.0, matches / 3))
    return sum(scores) / len(scores)


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQAv2 as the current official ``vqaEval.py`` (2021) scores one question."""
    predicted, references = clean_whitespace(prediction), [clean_whitespace(a) for a in answers]
    if len(set(references)) > 1:  # annotators disagree: normalise both sides; they agree: exact (OCR-like)
        references = [process_digit_article(process_punctuation(a)) for a in references]
        predicted = process_digit_article(process_punctuation(predicted))
    return leave_one_out(predicted, references)


def vqa_accuracy_2016(prediction: str, answers: list[str]) -> float:
    """VQAv2 as the earlier ``vqaEval.py`` scored one question: the prediction always normalised; the raw
    answers punctuation-processed (no lower case, digits or articles) only when they are not all identical."""
    references = list(answers)
    if len(set(references)) > 1:
        references = [process_punctuation(a) for a in references]
    return leave_one_out(normalize_vqa_answer(prediction), references)


def textvqa_accuracy(prediction: str, answers: list[str]) -> float:
    """TextVQA as LLaVA's ``TextVQAAccuracyEvaluator`` scores one question (it asserts 10 answers)."""
    if len(answers) != 10:
        raise ValueError(f"TextVQA accuracy needs exactly 10 reference answers; got {len(answers)}")
    return leave_one_out(evalai_answer(prediction), [evalai_answer(a) for a in answers])


def vizwiz_accuracy(prediction: str, answers: list[str]) -> float:
    """VizWiz as its API's ``vqaEval.py`` scores one question: the answers are compared as they are."""
    return leave_one_out(normalize_vqa_answer(prediction), list(answers))

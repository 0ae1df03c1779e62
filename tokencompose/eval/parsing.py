"""Turning free-text answers into labels, as each benchmark's official (or LLaVA-1.5's) script does.

None of these strips the answer first unless its source does: generated answers are stripped once, at
generation (``VLM.answer``), as LLaVA's ``model_vqa*.py`` scripts do.
"""

from __future__ import annotations

import re


def parse_yes_no_pope(text: str) -> str:
    """POPE (AoiDragon/POPE ``evaluate.py``, LLaVA ``eval_pope.py``): first sentence, commas dropped; 'no' if
    any space-separated word is No/no/not, else 'yes'."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_label_is_positive(label: object) -> bool:
    """POPE gold label: negative only if it is exactly the string 'no' (``label_list[i] == 'no'``)."""
    return label != "no"


def parse_yes_no_mme(text: str) -> str:
    """MME (``eval_tool/calculation.py``): lower-cased, *not* stripped; 'yes'/'no' exactly, else 'yes' or 'no'
    found in the first four characters, else 'other'."""
    answer = text.lower()
    if answer in ("yes", "no"):
        return answer
    prefix = answer[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


OPTIONS = ("A", "B", "C", "D", "E")  # eval_science_qa.py's --options default
ANSWER_IS = re.compile(r"The answer is ([A-Z]).")  # the '.' is any character, as upstream: a letter must follow


def parse_option_letter(text: str, num_options: int) -> str | None:
    """Multiple choice as LLaVA-1.5's ``eval_science_qa.py``: the answer is one of A-E, or starts with a
    letter and '. ', or holds exactly one 'The answer is X?'; the letter must name one of the ``num_options``
    choices. None (wrong) otherwise."""
    if text in OPTIONS:
        letter = text
    elif len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        letter = text[0]
    else:
        found = ANSWER_IS.findall(text)
        letter = found[0] if len(found) == 1 else None
    return letter if letter in OPTIONS[:num_options] else None


def gqa_prediction(text: str) -> str:
    """GQA: LLaVA's ``scripts/convert_gqa_for_eval.py`` (trailing periods removed, lower case); the official
    GQA ``eval.py`` then compares it with the gold answer exactly."""
    return text.rstrip(".").lower()


def normalize_exact(text: str) -> str:
    """The synthetic shapes task (ours): lower case, surrounding space and a trailing period removed."""
    text = text.strip().lower()
    return text[:-1] if text.endswith(".") else text

"""Turning free-text answers into labels, as LLaVA-1.5's evaluation scripts do."""

from __future__ import annotations

import re


def parse_yes_no_pope(text: str) -> str:
    """POPE (``eval_pope.py``): first sentence, commas dropped; 'no' if any word is No/no/not, else 'yes'."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def parse_yes_no_mme(text: str) -> str:
    """MME (``calculation.py``): 'yes'/'no' exactly, else by the first four characters, else 'other'."""
    answer = text.lower().strip()
    if answer in ("yes", "no"):
        return answer
    prefix = answer[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


ANSWER_IS = re.compile(r"The answer is ([A-Z])")


def parse_option_letter(text: str, num_options: int) -> str | None:
    """Multiple choice (ScienceQA, MMBench): 'B', 'B. ...', or 'The answer is B'; None if no valid letter."""
    letters = [chr(ord("A") + i) for i in range(num_options)]
    text = text.strip()
    if text in letters:
        return text
    if len(text) >= 2 and text[0] in letters and text[1] in ".):":
        return text[0]
    found = ANSWER_IS.findall(text)
    if len(found) == 1 and found[0] in letters:
        return found[0]
    return None


def normalize_exact(text: str) -> str:
    """GQA exact match: lower case, surrounding space and a trailing period removed."""
    text = text.strip().lower()
    return text[:-1] if text.endswith(".") else text

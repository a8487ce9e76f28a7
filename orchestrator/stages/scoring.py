"""Minimal answer check used by evaluation until the math reward plugin is wired in.

Takes the ``<answer>`` block (else the last number or fraction) and compares it with the gold answer as an
exact rational. Enough for the synthetic arithmetic task, whose answers are integers and fractions.
"""

from __future__ import annotations

import re
from fractions import Fraction

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?")


def extract_answer(completion: str) -> str | None:
    blocks = _ANSWER.findall(completion)
    if blocks:
        return blocks[-1].strip()
    tail = completion.split("</think>")[-1]
    numbers = _NUMBER.findall(tail)
    return numbers[-1].replace(" ", "") if numbers else None


def _as_fraction(text: str) -> Fraction | None:
    text = text.strip().replace(" ", "").replace(",", "")
    if len(text) > 64:
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def score_math(completion: str, gold: str) -> float:
    """1.0 if the completion's final answer equals ``gold`` as a rational number (or as text), else 0.0."""
    answer = extract_answer(completion)
    if answer is None:
        return 0.0
    a, b = _as_fraction(answer), _as_fraction(str(gold))
    if a is not None and b is not None:
        return float(a == b)
    return float(answer.strip() == str(gold).strip())

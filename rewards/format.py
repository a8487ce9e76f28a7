"""`format`: 1.0 when the completion follows the R1 template, else 0.0 with the violation in details.

Template: exactly one `<think>…</think>` at the start (leading whitespace allowed), then a non-empty answer;
with `require_answer_tag`, the answer must be exactly one `<answer>…</answer>` block with nothing after it.
Nothing may be left unterminated. With `think_in_prompt` (chat templates that already open `<think>` in the
prompt), the completion must instead contain no `<think>` and exactly one `</think>`.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from rewards.base import RewardResult, as_text

_ANSWER_BLOCK_RE = re.compile(r"^<answer>(.*)</answer>$", re.S)


class FormatReward:
    """R1 template check: one <think>…</think> first, then a non-empty (optionally tagged) answer."""

    def __init__(self, require_answer_tag: bool = False, think_in_prompt: bool = False) -> None:
        self.require_answer_tag = require_answer_tag
        self.think_in_prompt = think_in_prompt

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        violation = self.violation(as_text(completion))
        return RewardResult(0.0, {"violation": violation}) if violation else RewardResult(1.0, {})

    def violation(self, text: str) -> str | None:
        """The first rule the text breaks, as a sentence; None when it follows the template."""
        text = text.lstrip()
        opens, closes = text.count("<think>"), text.count("</think>")
        if self.think_in_prompt:
            if opens:
                return "The completion opens <think> although the prompt already did."
        elif not text.startswith("<think>"):
            return "The completion does not start with <think>."
        elif opens != 1:
            return f"The completion has {opens} <think> tags; exactly one is allowed."
        if closes != 1:
            return f"The completion has {closes} </think> tags; exactly one is required."
        answer = text.split("</think>", 1)[1].strip()
        if not answer:
            return "Nothing follows </think>: the answer is empty."
        a_open, a_close = answer.count("<answer>"), answer.count("</answer>")
        if self.require_answer_tag:
            m = _ANSWER_BLOCK_RE.match(answer)
            if m is None or a_open != 1 or a_close != 1:
                return "The answer must be exactly one <answer>…</answer> block with nothing around it."
            if not m.group(1).strip():
                return "The <answer> block is empty."
            return None
        if a_open != a_close or a_open > 1:
            return "The answer has unbalanced or repeated <answer> tags."
        if a_open and not re.search(r"<answer>\s*\S.*?</answer>", answer, re.S):
            return "The <answer> block is empty or closed before it opens."
        return None

r"""`math`: 1.0 when the completion's final answer equals the sample's `answer`, else 0.0.

Pipeline: extract the answer (math_checker.extract: `<answer>` block, last `\boxed{}`, answer phrases, bold, a
trailing expression; never the `<think>` block) → normalise and structure both answers (math_checker.parse) →
compare (math_checker.compare). Plain numbers, text and their sets/tuples are decided in-process in microseconds;
anything that needs sympy runs in a forked child of a warm helper process with a hard wall-clock and memory
bound per comparison (rewards/isolation/bounded.py), so `5^{5^{5^{5}}}` or 200 kB of garbage returns within
`timeout_s` with `details["error"] = "timeout"` or `"parse_error"`.

Numbers: exact values compare exactly; where a side is a decimal, values agree to a relative 1e-9 or the
decimal shows ≥ 4 significant digits and the other value rounds to it (see math_checker.compare for the rule).
Percent signs, degree marks, currency, thousands separators and trailing unit words are normalised away;
`50\%` matches both `50` and `0.5`, `30^\circ` matches `30` and `\frac{\pi}{6}`.

Multiple choice: when the gold answer is a letter A–J, the predicted letter is compared (`(B)`, `B.`,
`\boxed{B}`, "the answer is B"); with a `choices` field (a list, or a dict keyed by letter) an answer that
equals the right choice's text also counts.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Mapping

from rewards.base import RewardResult, as_text, failure
from rewards.isolation.bounded import BoundedCaller
from rewards.math_checker.compare import FastJudge, Undecided, equivalent
from rewards.math_checker import MAX_ANSWER_CHARS
from rewards.math_checker.extract import Extraction, choice_letter, extract_answer, find_boxed, joined_boxes
from rewards.math_checker.parse import AnswerParseError, Node, parse_answer

_GOLD_PROSE_CHARS = 200
_LETTER_GOLD_RE = re.compile(r"^\(?\s*([A-J])\s*\)?\.?$")


class MathReward:
    """Math answer correctness against `answer` (sympy equivalence, bounded in time and memory)."""

    def __init__(
        self,
        timeout_s: float = 5.0,
        memory_mb: int = 1024,
        answer_key: str = "answer",
        require_boxed: bool = False,
        cache_size: int = 4096,
    ) -> None:
        if timeout_s <= 0 or memory_mb <= 0:
            raise ValueError("math: timeout_s and memory_mb must be positive.")
        self.timeout_s = timeout_s
        self.answer_key = answer_key
        self.require_boxed = require_boxed
        self.cache_size = cache_size
        self._caller = BoundedCaller("rewards.math_checker.sympy_judge:judge", memory_mb=memory_mb)
        # GRPO samples several completions per prompt, and many share a final answer.
        self._cache: OrderedDict[tuple[str, str], RewardResult] = OrderedDict()

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        gold_text = gold_answer_text(sample.get(self.answer_key))
        if not gold_text:
            return failure("no_gold", f"The sample has no '{self.answer_key}' field to grade against.")
        extraction = extract_answer(as_text(completion))
        if self.require_boxed and extraction.how == "phrase_after_box":
            extraction = Extraction(find_boxed(extraction.region)[-1], "boxed", extraction.region)
        if extraction.answer is None or (self.require_boxed and extraction.how not in ("boxed", "answer_tag")):
            why = "the reasoning never ends (no </think>)" if extraction.how == "unterminated_think" else None
            return failure("no_answer", f"No final answer was found{' because ' + why if why else ''}.",
                           how=extraction.how)
        details = {"extracted": extraction.answer[:200], "how": extraction.how, "gold": gold_text[:200]}
        letter = _gold_letter(gold_text)
        if letter is not None:
            return self._multiple_choice(letter, extraction.answer, extraction.region, sample, details)
        key = (gold_text, extraction.answer)
        if key in self._cache:
            self._cache.move_to_end(key)
            cached = self._cache[key]
            return RewardResult(cached.score, {**cached.details, **details})
        result = self._grade(gold_text, extraction.answer, details)
        limited = result.details.get("error") in ("timeout", "memory_limit")
        if result.score == 0.0 and extraction.how == "boxed" and not limited:  # one limit per case, not two
            result = self._try_all_boxes(gold_text, extraction.region, result)
        if self.cache_size and result.details.get("error") not in ("timeout", "memory_limit"):
            self._cache[key] = result  # limits are transient outcomes: never cached
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def _grade(self, gold_text: str, answer: str, details: dict[str, Any]) -> RewardResult:
        try:
            gold = parse_answer(gold_text)
            pred = parse_answer(answer)
        except AnswerParseError as exc:
            return failure("parse_error", str(exc), **details)
        if gold is None:
            return failure("no_gold", "The gold answer is empty after normalisation.", **details)
        if pred is None:
            return failure("no_answer", "The extracted answer is empty after normalisation.", **details)
        try:
            return RewardResult(float(equivalent(gold, pred, FastJudge())), {**details, "method": "exact"})
        except Undecided:
            pass
        outcome = self._caller.call((gold, pred), self.timeout_s)
        if outcome.status == "ok":
            return RewardResult(float(bool(outcome.value)), {**details, "method": "sympy"})
        if outcome.status in ("timeout", "memory_limit"):
            return failure(outcome.status, f"The sympy comparison hit its limit: {outcome.value}", **details)
        return failure("parse_error", f"The sympy comparison failed: {outcome.value}", **details)

    def _try_all_boxes(self, gold_text: str, region: str, result: RewardResult) -> RewardResult:
        # Multi-part answers are often boxed one part at a time: "\boxed{2} and \boxed{3}".
        joined = joined_boxes(region)
        if joined is None or "," not in joined or len(joined) > MAX_ANSWER_CHARS:
            return result
        retry = self._grade(gold_text, joined, {**result.details, "extracted": joined[:200], "how": "all_boxed"})
        return retry if retry.score > 0 else result

    def _multiple_choice(
        self, letter: str, answer: str, region: str, sample: Mapping[str, Any], details: dict[str, Any]
    ) -> RewardResult:
        predicted = choice_letter(answer, region)
        details = {**details, "method": "choice", "predicted_letter": predicted}
        if predicted is not None:
            return RewardResult(float(predicted == letter), details)
        text = _choice_text(sample.get("choices"), letter)
        if text is not None:
            result = self._grade(text, answer, details)
            return RewardResult(result.score, {**result.details, "method": "choice_text"})
        return failure("no_answer", "The gold answer is a choice letter but no letter was found.", **details)

    def warm_up(self) -> None:
        self._caller.call((Node("expr", text="1"), Node("expr", text="1")), timeout_s=60.0)

    def close(self) -> None:
        self._caller.close()


def gold_answer_text(raw: Any) -> str:
    """The gold answer as a string: numbers are printed, a `\\boxed{}` inside a solution is unwrapped."""
    if raw is None or isinstance(raw, (dict, list)):
        return ""
    text = as_text(raw, limit=MAX_ANSWER_CHARS * 4).strip()
    if "\\boxed" in text or "\\fbox" in text:
        return joined_boxes(text, trusted=True) or text  # `\boxed{1}\boxed{2}` is the gold set {1, 2}
    if len(text) > _GOLD_PROSE_CHARS and len(re.findall(r"[A-Za-z]{3,}\s+[A-Za-z]{3,}", text)) > 3:
        # A whole solution given as the gold: its final answer, found as in a completion.
        return extract_answer(text).answer or text
    return text


def _gold_letter(gold_text: str) -> str | None:
    plain = re.sub(r"\\text(?:bf)?\{([^{}]*)\}", r"\1", gold_text).replace("$", "").strip()
    m = _LETTER_GOLD_RE.match(plain)
    return m.group(1) if m else None


def _choice_text(choices: Any, letter: str) -> str | None:
    index = ord(letter) - ord("A")
    if isinstance(choices, Mapping):
        value = choices.get(letter, choices.get(letter.lower()))
    elif isinstance(choices, (list, tuple)) and index < len(choices):
        value = choices[index]
    else:
        return None
    return as_text(value, limit=MAX_ANSWER_CHARS) if value is not None else None


__all__ = ["MathReward", "gold_answer_text", "Node"]

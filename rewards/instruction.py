"""`instruction`: the share of a sample's `constraints` that the completion's answer meets (1.0: all met).

The answer is what `math` would read as the answer region: the text after the last `</think>`, narrowed to
the content of the last `<answer>…</answer>` block when there is one (an unterminated block runs to the end);
a completion with no tags at all is its own answer, and one whose `<think>` never closes has none (score 0,
`no_answer`). The reasoning is never judged. Whether the tags were used properly is `format`'s business.

Constraints are a JSON object on the sample, `{name: parameter}`; values of `None` count as absent (a
parquet struct column fills missing keys with nulls), and a JSON string holding the object is accepted.

| name | parameter | met when the answer … |
|---|---|---|
| `equals` | str | equals it, runs of whitespace folded to one space (case-sensitive) |
| `words` | list[str] | has exactly these words in this order (case-insensitive) |
| `word_count` | int | has exactly this many words |
| `allowed_words` | list[str] | has at least one word, and only words from the list (case-insensitive) |
| `starts_with` | str | has this as its first word (case-insensitive) |
| `ends_with` | str | ends with it, trailing whitespace ignored |
| `case` | "upper" / "lower" | has a cased letter and no letter of the other case |
| `items` | list[str] | split at commas, whitespace-stripped, is exactly this list |
| `list_length` | int | split at commas gives this many non-empty items |

A word is a whitespace-separated token with surrounding punctuation removed (`"moon,"` is `moon`); a token
that is only punctuation is not a word. Score: met / total by default, so partial compliance earns partial
credit (a group of GRPO samples then has something to rank); `all_or_nothing=True` gives 1 or 0. Details
list the `met` constraints and, for each failed one, why. A sample without usable constraints scores 0 with
`no_gold`; unknown constraint names are an error too, never silently skipped.
"""

from __future__ import annotations

import json
import string
from typing import Any, Callable, Mapping

from rewards.base import RewardResult, as_text, failure
from rewards.math_checker.extract import answer_region

MAX_CHECKED_CHARS = 20_000  # far above any answer these tasks want; bounds the work on hostile output
_MAX_CONSTRAINTS = 64
_MAX_LIST = 1_000
_PUNCTUATION = string.punctuation + "“”‘’«»…"


def words_of(text: str) -> list[str]:
    """Lower-cased words: whitespace-separated tokens stripped of surrounding punctuation, empty ones dropped."""
    return [w for w in (token.strip(_PUNCTUATION).lower() for token in text.split()) if w]


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")]


def _equals(answer: str, want: str) -> str | None:
    got = " ".join(answer.split())
    return None if got == " ".join(want.split()) else f"the answer is {got[:80]!r}, not {want[:80]!r}"


def _words(answer: str, want: list[str]) -> str | None:
    got = words_of(answer)
    return None if got == [w.lower() for w in want] else f"the words are {got[:20]}, not {want[:20]}"


def _word_count(answer: str, want: int) -> str | None:
    n = len(words_of(answer))
    return None if n == want else f"the word count is {n}, not {want}"


def _allowed_words(answer: str, allowed: list[str]) -> str | None:
    got = words_of(answer)
    if not got:
        return "the answer has no words"
    others = sorted({w for w in got if w not in {a.lower() for a in allowed}})
    return f"words outside the list: {others[:10]}" if others else None


def _starts_with(answer: str, first: str) -> str | None:
    got = words_of(answer)
    head = got[0] if got else None
    return None if head == first.lower() else f"the first word is {head!r}, not {first!r}"


def _ends_with(answer: str, suffix: str) -> str | None:
    return None if answer.rstrip().endswith(suffix) else f"the answer does not end with {suffix!r}"


def _case(answer: str, case: str) -> str | None:
    cased = [c for c in answer if c.isupper() or c.islower()]
    if not cased:
        return "the answer has no letters"
    wrong = sum(c.islower() if case == "upper" else c.isupper() for c in cased)
    return f"{wrong} letters are not {case} case" if wrong else None


def _list_items(answer: str, want: list[str]) -> str | None:
    got = _items(answer)
    return None if got == want else f"the items are {got[:20]}, not {want[:20]}"


def _list_length(answer: str, n: int) -> str | None:
    got = _items(answer)
    if any(not item for item in got):
        return "the list has an empty item"
    return None if len(got) == n else f"the list has {len(got)} items, not {n}"


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_LIST


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= _MAX_LIST and all(isinstance(x, str) for x in v)


# name -> (check returning the reason it fails or None, parameter check, what the parameter must be)
CHECKS: dict[str, tuple[Callable[[str, Any], str | None], Callable[[Any], bool], str]] = {
    "equals": (_equals, _is_str, "a string"),
    "words": (_words, _is_str_list, "a list of strings"),
    "word_count": (_word_count, _is_count, "a whole number"),
    "allowed_words": (_allowed_words, lambda v: _is_str_list(v) and bool(v), "a non-empty list of strings"),
    "starts_with": (_starts_with, lambda v: _is_str(v) and bool(words_of(v)), "a word"),
    "ends_with": (_ends_with, lambda v: _is_str(v) and bool(v), "a non-empty string"),
    "case": (_case, lambda v: v in ("upper", "lower"), "'upper' or 'lower'"),
    "items": (_list_items, _is_str_list, "a list of strings"),
    "list_length": (_list_length, lambda v: _is_count(v) and v > 0, "a positive whole number"),
}


def parse_constraints(raw: Any) -> dict[str, Any] | str:
    """The usable constraints of a sample, or a sentence saying why there are none."""
    if isinstance(raw, str):
        try:
            raw = json.loads(as_text(raw, 100_000))
        except ValueError:
            return "The sample's 'constraints' is a string that is not a JSON object."
    if not isinstance(raw, Mapping):
        return f"The sample has no 'constraints' object (found {type(raw).__name__})."
    given = {k: v for k, v in raw.items() if v is not None}
    if not given:
        return "The sample's 'constraints' object is empty."
    if len(given) > _MAX_CONSTRAINTS:
        return f"The sample has {len(given)} constraints; at most {_MAX_CONSTRAINTS} are checked."
    for name, value in given.items():
        if name not in CHECKS:
            return f"Unknown constraint {str(name)[:40]!r}; known: {', '.join(CHECKS)}."
        if not CHECKS[name][1](value):
            return f"Constraint {name!r} must be {CHECKS[name][2]}."
    return given


class InstructionReward:
    """Instruction following: share of the sample's `constraints` met by the answer (rule-checked)."""

    def __init__(self, all_or_nothing: bool = False, constraints_key: str = "constraints") -> None:
        self.all_or_nothing = all_or_nothing
        self.constraints_key = constraints_key

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        constraints = parse_constraints(sample.get(self.constraints_key))
        if isinstance(constraints, str):
            return failure("no_gold", constraints)
        answer, how = answer_region(as_text(completion))
        if answer is None:
            return failure("no_answer", "The reasoning never ends (no </think>), so there is no answer.")
        if len(answer) > MAX_CHECKED_CHARS:
            return RewardResult(0.0, {"met": [], "violation": f"The answer is longer than {MAX_CHECKED_CHARS} "
                                                              "characters; no constraint was checked."})
        met, failed = [], {}
        for name, value in constraints.items():
            reason = CHECKS[name][0](answer, value)
            if reason is None:
                met.append(name)
            else:
                failed[name] = reason
        score = len(met) / len(constraints)
        if self.all_or_nothing:
            score = float(score == 1.0)
        return RewardResult(score, {"met": met, "failed": failed, "how": how, "answer": answer.strip()[:200]})

"""The math reward: the labelled grading corpus, extraction, parsing, and the bounded sympy process."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from rewards.isolation.bounded import BoundedCaller
from rewards.math import MathReward, gold_answer_text
from rewards.math_checker.extract import answer_region, choice_letter, extract_answer, find_boxed
from rewards.math_checker.parse import AnswerParseError, parse_answer

CORPUS = Path(__file__).parent / "data" / "rewards" / "math_cases.jsonl"
CASES = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def math_reward() -> MathReward:
    reward = MathReward(timeout_s=TIMEOUT_S)
    yield reward
    reward.close()


def test_corpus_is_large_and_balanced() -> None:
    assert len(CASES) >= 150
    assert sum(c["expected"] == 1 for c in CASES) >= 50 and sum(c["expected"] == 0 for c in CASES) >= 50
    assert len({c["id"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_grading_corpus(math_reward: MathReward, case: dict) -> None:
    start = time.monotonic()
    result = math_reward(case["completion"], case)
    elapsed = time.monotonic() - start
    assert result.score == case["expected"], f"{case['source']}: {result.details}"
    assert elapsed < TIMEOUT_S + 2.5, f"took {elapsed:.1f} s"


def test_pathological_inputs_return_within_the_deadline(math_reward: MathReward) -> None:
    rng = random.Random(0)
    garbage = "".join(rng.choice("{}\\^_$()[]abc123+-*/ ") for _ in range(200_000))
    for completion in (garbage, "\\boxed{" * 50_000, "<think>" + "x" * 500_000, "\\boxed{5^{5^{5^{5}}}}"):
        start = time.monotonic()
        result = math_reward(completion, {"answer": "7"})
        assert result.score == 0.0
        assert time.monotonic() - start < TIMEOUT_S + 2.5
    tower = math_reward("\\boxed{5^{5^{5^{5}}}}", {"answer": "3"})
    assert tower.details["error"] == "timeout"
    assert math_reward("\\boxed{42}", {"answer": "42"}).score == 1.0  # the helper recovered


def test_odd_samples_never_raise(math_reward: MathReward) -> None:
    assert math_reward("\\boxed{7}", {"answer": 7}).score == 1.0
    assert math_reward("\\boxed{7}", {"answer": 7.0}).score == 1.0
    for sample in ({}, {"answer": None}, {"answer": {"x": 1}}, {"answer": ""}):
        assert math_reward("\\boxed{7}", sample).details["error"] == "no_gold"
    assert math_reward(None, {"answer": "7"}).details["error"] == "no_answer"  # type: ignore[arg-type]


def test_require_boxed_ignores_loose_answers() -> None:
    strict = MathReward(require_boxed=True)
    assert strict("The answer is 7.", {"answer": "7"}).score == 0.0
    assert strict("<answer>7</answer>", {"answer": "7"}).score == 1.0
    assert strict("\\boxed{7}", {"answer": "7"}).score == 1.0


def test_gold_in_solution_form_is_unwrapped() -> None:
    assert gold_answer_text("So the total is $\\boxed{\\frac{3}{4}}$.") == "\\frac{3}{4}"
    assert gold_answer_text(12) == "12"


def test_answer_region_and_boxes() -> None:
    assert answer_region("<think>a</think>b") == ("b", "text")
    assert answer_region("<think>a") == (None, "unterminated_think")
    assert answer_region("x<answer>1</answer><answer>2") == ("2", "answer_tag")
    assert find_boxed(r"\boxed{\{1,2\}} and \fbox{3}", last_only=False) == [r"\{1,2\}", "3"]
    assert find_boxed(r"\boxed{unbalanced") == []
    assert extract_answer("We find 3 apples and 4 pears, 7 fruit").answer == "7"


def test_choice_letters() -> None:
    assert choice_letter("(C)") == "C"
    assert choice_letter("\\text{B}") == "B"
    assert choice_letter("D. 12 apples") == "D"
    assert choice_letter("42", "Therefore the correct option is (E).") == "E"
    assert choice_letter("42") is None


def test_parse_structures() -> None:
    assert parse_answer("(1, 2]").kind == "interval"  # type: ignore[union-attr]
    assert parse_answer("x=1, y=2").kind == "assign"  # type: ignore[union-attr]
    assert parse_answer(r"\{1, 2\}").kind == "set"  # type: ignore[union-attr]
    assert parse_answer("1,000").text == "1000"  # type: ignore[union-attr]
    assert parse_answer("$ $") is None
    with pytest.raises(AnswerParseError):
        parse_answer("1" * 5000)
    with pytest.raises(AnswerParseError):
        parse_answer("{" * 60 + "}" * 60)


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes << 20))


def crash() -> None:
    os.abort()


def test_bounded_caller_enforces_time_and_memory_and_recovers() -> None:
    caller = BoundedCaller(f"{__name__}:sleep_for", memory_mb=128)
    try:
        assert caller.call((0.01,), timeout_s=5).value == 0.01
        start = time.monotonic()
        assert caller.call((30,), timeout_s=0.5).status == "timeout"
        assert time.monotonic() - start < 2.0
        assert caller.call((0.02,), timeout_s=5).value == 0.02
    finally:
        caller.close()
    memory = BoundedCaller(f"{__name__}:allocate", memory_mb=128)
    try:
        assert memory.call((16,), timeout_s=5).value == 16 << 20
        assert memory.call((1024,), timeout_s=5).status == "memory_limit"
        assert memory.call((16,), timeout_s=5).status == "ok"
    finally:
        memory.close()
    crasher = BoundedCaller(f"{__name__}:crash", memory_mb=128)
    try:
        assert crasher.call((), timeout_s=5).status == "crashed"
    finally:
        crasher.close()

"""The `instruction` reward: each constraint by hand, partial credit, answer extraction, hostile input."""

from __future__ import annotations

import pytest

from rewards.instruction import CHECKS, InstructionReward
from rewards.registry import get_reward


def score(answer: str, **constraints) -> float:
    return InstructionReward()(f"<think>\nok\n</think>\n<answer>{answer}</answer>", {"constraints": constraints}).score


@pytest.mark.parametrize(
    ("answer", "constraints", "expected"),
    [
        ("cup  rain\ntree", {"equals": "cup rain tree"}, 1.0),
        ("Cup rain tree", {"equals": "cup rain tree"}, 0.0),
        ("Owl, owl!", {"words": ["owl", "owl"]}, 1.0),
        ("owl owl owl", {"words": ["owl", "owl"]}, 0.0),
        ("box owl", {"words": ["owl", "box"]}, 0.0),
        ("a b , c .", {"word_count": 3}, 1.0),
        ("a b c d", {"word_count": 3}, 0.0),
        ("Moon, STAR moon.", {"allowed_words": ["moon", "star"]}, 1.0),
        ("moon sun", {"allowed_words": ["moon", "star"]}, 0.0),
        ("...", {"allowed_words": ["moon"]}, 0.0),
        ("Fish wind ice.", {"starts_with": "fish"}, 1.0),
        ("a fish", {"starts_with": "fish"}, 0.0),
        ("box ice nest!  ", {"ends_with": "!"}, 1.0),
        ("box ice nest", {"ends_with": "!"}, 0.0),
        ("HAT CUP 2", {"case": "upper"}, 1.0),
        ("HAT Cup", {"case": "upper"}, 0.0),
        ("123", {"case": "lower"}, 0.0),
        ("cup, rain ,tree", {"items": ["cup", "rain", "tree"]}, 1.0),
        ("cup, tree, rain", {"items": ["cup", "rain", "tree"]}, 0.0),
        ("cup rain tree", {"items": ["cup", "rain", "tree"]}, 0.0),
        ("ice, moon", {"list_length": 2}, 1.0),
        ("ice, moon,", {"list_length": 2}, 0.0),
        ("ice moon", {"list_length": 2}, 0.0),
    ],
)
def test_each_constraint(answer: str, constraints: dict, expected: float) -> None:
    assert score(answer, **constraints) == expected


def test_every_constraint_is_covered_above() -> None:
    assert set(CHECKS) == {"equals", "words", "word_count", "allowed_words", "starts_with", "ends_with", "case",
                           "items", "list_length"}


def test_partial_credit_and_all_or_nothing() -> None:
    sample = {"constraints": {"word_count": 4, "starts_with": "fish", "ends_with": "."}}
    completion = "<think>x</think><answer>fish wind ice</answer>"  # right start, 3 words, no period
    partial = InstructionReward()(completion, sample)
    assert partial.score == pytest.approx(1 / 3)
    assert partial.details["met"] == ["starts_with"]
    assert set(partial.details["failed"]) == {"word_count", "ends_with"}
    assert partial.details["failed"]["word_count"] == "the word count is 3, not 4"
    assert InstructionReward(all_or_nothing=True)(completion, sample).score == 0.0
    assert InstructionReward(all_or_nothing=True)(completion.replace("ice", "ice tree."), sample).score == 1.0


def test_answer_region_never_the_reasoning() -> None:
    sample = {"constraints": {"equals": "6"}}
    reward = InstructionReward()
    assert reward("<think>the answer is 6</think><answer>5</answer>", sample).score == 0.0
    assert reward("<think>count</think>\n6\n", sample).score == 1.0  # no answer tag: the text after </think>
    assert reward("6", sample).score == 1.0  # no tags at all: the whole completion
    assert reward("<think>a</think><answer>1</answer> <answer>6</answer>", sample).score == 1.0  # the last block
    unterminated = reward("<think>6", sample)
    assert unterminated.score == 0.0 and unterminated.details["error"] == "no_answer"


@pytest.mark.parametrize(
    ("constraints", "message"),
    [
        (None, "no 'constraints' object"),
        ({}, "is empty"),
        ({"word_count": None}, "is empty"),  # parquet fills missing struct keys with nulls
        ({"rhyme": "cat"}, "Unknown constraint 'rhyme'"),
        ({"word_count": "3"}, "'word_count' must be a whole number"),
        ({"word_count": True}, "'word_count' must be a whole number"),
        ({"case": "title"}, "'case' must be 'upper' or 'lower'"),
        ({"items": ["a", 1]}, "'items' must be a list of strings"),
        ({"allowed_words": []}, "'allowed_words' must be a non-empty list"),
        ({"starts_with": "!!"}, "'starts_with' must be a word"),
        ("{not json", "not a JSON object"),
        ([1, 2], "found list"),
        ({f"c{i}": 1 for i in range(100)}, "at most 64"),
    ],
)
def test_bad_constraints_score_zero_with_a_reason(constraints, message: str) -> None:
    result = InstructionReward()("<answer>3</answer>", {"constraints": constraints})
    assert result.score == 0.0
    assert result.details["error"] == "no_gold" and message in result.details["message"]


def test_constraints_as_a_json_string_and_nulls_ignored() -> None:
    sample = {"constraints": '{"word_count": 2, "case": null, "ends_with": "."}'}
    assert InstructionReward()("<answer>two words.</answer>", sample).score == 1.0


def test_hostile_completions_never_raise() -> None:
    reward = get_reward("instruction")  # through SafeReward, as the reward workers call it
    sample = {"constraints": {"word_count": 2, "case": "lower"}}
    huge = reward("word " * 300_000, sample)
    assert huge.score == 0.0 and "longer than" in huge.details["violation"]
    binary = reward(bytes(range(256)) * 50, sample)
    assert binary.score == 0.0 and "error" not in binary.details
    assert reward(None, sample).score == 0.0
    assert reward("<answer>" * 10_000 + "two words", sample).score == 1.0  # the last (unterminated) block
    assert reward("</think>" * 5 + "<answer>two words</answer>", sample).score == 1.0
    assert reward("two words", "not a mapping").details["error"] == "no_gold"
    nested = reward("x", {"constraints": {"items": [["deep"]] * 10}})
    assert nested.details["error"] == "no_gold"

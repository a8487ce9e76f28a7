"""format, language, and the length-shaping rewards."""

from __future__ import annotations

import pytest

from rewards.format import FormatReward
from rewards.language import LanguageReward, detect_language, language_code, words
from rewards.shaping import LengthReward, OverlongPenalty


@pytest.mark.parametrize(
    ("completion", "score"),
    [
        ("<think>reason</think>answer", 1.0),
        ("  \n<think>\nreason\n</think>\n\nThe answer is 4.", 1.0),
        ("<think></think>4", 1.0),
        ("answer first <think>x</think> 4", 0.0),
        ("<think>reason</think>", 0.0),
        ("<think>reason</think>   \n ", 0.0),
        ("<think>a</think><think>b</think>4", 0.0),
        ("<think>reason with no end. 4", 0.0),
        ("<think>a</think>4 </think>", 0.0),
        ("<think>a</think><answer>4", 0.0),
        ("<think>a</think><answer></answer>", 0.0),
        ("<think>a</think></answer>4<answer>", 0.0),
        ("<think>a</think><answer>4</answer>", 1.0),
        ("", 0.0),
    ],
)
def test_format(completion: str, score: float) -> None:
    result = FormatReward()(completion, {})
    assert result.score == score, result.details
    if score == 0.0:
        assert result.details["violation"].endswith(".")


def test_format_with_required_answer_tag_and_think_in_prompt() -> None:
    strict = FormatReward(require_answer_tag=True)
    assert strict("<think>a</think>\n<answer> 4 </answer>\n", {}).score == 1.0
    assert strict("<think>a</think>4", {}).score == 0.0
    assert strict("<think>a</think><answer>4</answer> extra", {}).score == 0.0
    assert strict("<think>a</think><answer> </answer>", {}).score == 0.0
    prompted = FormatReward(think_in_prompt=True)
    assert prompted("reasoning</think>answer", {}).score == 1.0
    assert prompted("<think>reasoning</think>answer", {}).score == 0.0


def test_words_count_cjk_per_character_and_skip_math_code_numbers() -> None:
    assert list(words("hello world")) == ["latin", "latin"]
    assert list(words("你好 world")) == ["han", "han", "latin"]
    assert list(words("答案是ok")) == ["han", "han", "han", "latin"]
    assert list(words("答案是x, θ = π")) == ["han", "han", "han"]  # lone letters are variables
    ignored = "$x^2 + y$ and `code here` ```python\nprint('many words')\n``` 12345 <think> \\frac{a}{b}"
    assert list(words(ignored)) == ["latin"]  # only "and" remains
    assert list(words("Привет мир")) == ["cyrillic", "cyrillic"]


def test_language_consistency_scores() -> None:
    reward = LanguageReward()
    english = "<think>First add the numbers, then check.</think> 4"
    mixed = "<think>First 我们 add them</think> 4"
    assert reward(english, {"language": "en"}).score == 1.0
    assert reward(mixed, {"language": "en"}).score == pytest.approx(3 / 5)
    assert reward(mixed, {"language": "Chinese"}).score == pytest.approx(2 / 5)
    assert reward("<think>让我们计算</think>4", {"language": "zh-CN"}).score == 1.0
    assert reward("<think>まず計算します</think>", {"language": "ja"}).score == 1.0
    assert reward("<think>$$1+1=2$$</think>2", {"language": "en"}).details["words"] == 0


def test_language_target_from_prompt_then_default() -> None:
    reward = LanguageReward(default_language="ru")
    zh_prompt = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "计算一加一等于几"}]
    result = reward("<think>一加一等于二</think>2", {"prompt": zh_prompt})
    assert (result.score, result.details["language"], result.details["target_from"]) == (1.0, "zh", "prompt")
    assert reward("<think>hello</think>", {}).details["target_from"] == "default"
    assert detect_language("これは日本語の文です") == "ja"
    assert language_code("English") == "en" and language_code("pt_BR") == "pt" and language_code(3) is None


def test_language_is_deterministic_on_hostile_input() -> None:
    junk = "<think>" + "\x00\ud800é中" * 10_000
    first = LanguageReward()(junk, {"language": "en"})
    assert first == LanguageReward()(junk, {"language": "en"})
    assert 0.0 <= first.score <= 1.0


def test_overlong_penalty_follows_dapo() -> None:
    reward = OverlongPenalty(max_length=100, cache_length=20)
    scores = [reward("", {"response_length": n}).score for n in (10, 80, 90, 100, 150)]
    assert scores == [0.0, 0.0, pytest.approx(-0.5), -1.0, -1.0]
    assert reward("", {}).details["error"] == "no_length"
    assert OverlongPenalty(10, 5, unit="chars")("x" * 8, {}).score == pytest.approx(-0.6)
    with pytest.raises(ValueError):
        OverlongPenalty(max_length=10, cache_length=20)


def test_length_reward() -> None:
    reward = LengthReward(target_length=10, max_length=30, unit="words")
    assert reward("a " * 5, {}).score == 1.0
    assert reward("a " * 20, {}).score == pytest.approx(0.5)
    assert reward("a " * 40, {}).score == 0.0
    assert LengthReward(0, 10)("", {"response_length": [1, 2, 3, 4, 5]}).score == pytest.approx(0.5)

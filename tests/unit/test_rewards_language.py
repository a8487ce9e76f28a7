"""`language` tells languages apart (py3langid per sentence), not only scripts; R1's share reaches metrics."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import pytest

from actors.types import Rollout
from orchestrator.config import RLStage
from orchestrator.stages.rl_step import Group, StepBatch, StepTiming, step_record
from rewards.language import LanguageReward, detect_language, words
from rewards.registry import get_reward, reward_problem

CASES = Path(__file__).parent / "data" / "rewards" / "language_cases.jsonl"
REWARD = LanguageReward()

EN = ("Let me think about this step by step. The train leaves at 3 pm and travels at 60 km/h. Wait, I should "
      "compute when the second one catches up. Setting the distances equal gives t = 3. So they meet at 7 pm.")
FR = ("Réfléchissons étape par étape. Le train part à 15 h et roule à 60 km/h. Attends, il faut calculer quand "
      "le second rattrape le premier. En égalisant les distances, on trouve t = 3. Ils se rejoignent donc à 19 h.")
DE = ("Denken wir Schritt für Schritt nach. Der Zug fährt um 15 Uhr ab und fährt mit 60 km/h. Moment, ich muss "
      "berechnen, wann der zweite den ersten einholt. Gleichsetzen ergibt t = 3. Sie treffen sich also um 19 Uhr.")
ES = ("Pensemos paso a paso. El tren sale a las 15 h y viaja a 60 km/h. Espera, tengo que calcular cuándo el "
      "segundo alcanza al primero. Igualando las distancias se obtiene t = 3. Por lo tanto, se encuentran a las 19 h.")


def think(text: str) -> str:
    return f"<think>\n{text}\n</think>\n<answer>7</answer>"


def share(text: str, target: str, reward: LanguageReward = REWARD) -> float:
    result = reward(think(text), {"language": target})
    assert result.score == result.details["target_share"]
    return result.score


@pytest.mark.parametrize("text, lang", [(EN, "en"), (FR, "fr"), (DE, "de"), (ES, "es")])
def test_languages_of_one_script_are_told_apart(text: str, lang: str) -> None:
    for target in ("en", "fr", "de", "es"):
        expected = 1.0 if target == lang else 0.0
        assert share(text, target) == pytest.approx(expected, abs=0.05), target
    assert share(text, lang, LanguageReward(languages=[])) == 1.0  # the script rule alone cannot tell
    assert share(text, "zh" if lang != "zh" else "en", LanguageReward(languages=[])) == 0.0


def test_a_french_chain_of_thought_scores_low_for_english() -> None:
    result = REWARD(think(FR), {"language": "en"})
    assert result.score < 0.1
    assert result.details["method"] == "identifier" and result.details["words_by"].get("fr", 0) > 20


def test_a_mixed_chain_of_thought_scores_its_share() -> None:
    en = "Let me add the two numbers first and see what we get."
    fr = "Ensuite, je vérifie le résultat en refaisant le calcul dans l'autre sens."
    en2 = "Both ways give the same value, so the answer is correct."
    n_en, n_fr = len(list(words(en + " " + en2))), len(list(words(fr)))
    expected = n_en / (n_en + n_fr)
    assert 0.3 < expected < 0.8
    assert share(f"{en} {fr} {en2}", "en") == pytest.approx(expected, abs=0.05)
    assert share(f"{en} {fr} {en2}", "fr") == pytest.approx(1 - expected, abs=0.05)
    # a short sentence ("Wait.", "Hmm, ok.") takes the language of the one before it
    assert share(f"{FR} Wait. Hmm, ok.", "fr") == pytest.approx(1.0)


def test_math_and_code_do_not_count_against_the_target() -> None:
    code = ("I need a function that reverses a linked list, keeping three pointers.\n```python\ndef reverse(head):\n"
            "    prev = None\n    while head:\n        head.next, prev, head = prev, head, head.next\n"
            "    return prev\n```\nEach node is visited once, so the time is linear and the memory is constant.")
    math = (r"We solve $x^2 - 5x + 6 = 0$. Factoring gives $(x-2)(x-3) = 0$, so the roots are 2 and 3. By the formula "
            r"\[x = \frac{5 \pm \sqrt{25 - 24}}{2}.\] Since θ = π/4, sin θ = cos θ. The total_sum variable holds 17, "
            "and computeTotal() returns it.")
    for text in (code, math, "3 + 4 = 7, write 7 carry 0\n5 + 8 = 13, write 3 carry 1\n213 + 453 = 666"):
        assert share(text, "en") == 1.0
        assert share(text, "fr") == 0.0
    assert share("首先我们计算 x 的值，然后代入 t 得到结果。", "zh") == 1.0  # lone Latin letters are variables


def test_chinese_japanese_and_cyrillic() -> None:
    zh = "我们一步一步来思考。第一列火车下午三点出发。所以它们在晚上七点相遇。"
    ja = "まず、最初の十個の正の整数の和を求めます。したがって、答えは 55 です。"
    assert share(zh, "zh") == 1.0 and share(zh, "ja") == 0.0 and share(zh, "en") == 0.0
    assert share(ja, "ja") == 1.0 and share(ja, "zh") == 0.0
    ru = "Давайте рассуждать по шагам. Первый поезд отправляется в 15 часов. Значит, они встретятся в 19 часов."
    assert share(ru, "ru") == 1.0 and share(ru, "uk") == 0.0 and share(ru, "en") == 0.0
    mixed = "Okay, the problem asks for the area of a circle. 面积公式是圆周率乘以半径的平方。 So the area is about 28."
    assert 0.3 < share(mixed, "en") < 0.7


def test_very_short_reasoning_is_judged_by_script() -> None:
    for text in ("Okay.", "So x = 3.", "Yes", "Alors."):
        assert share(text, "en") == 1.0 and share(text, "fr") == 1.0  # too little to tell: the script decides
    assert share("Hmm, wait.", "en") == 1.0 and share("Hmm, wait.", "fr") == 0.0  # two words can be enough
    assert share("好的。", "en") == 0.0
    assert share("Donc la réponse est trois.", "fr") == 1.0 and share("Donc la réponse est trois.", "en") == 0.0


def test_target_from_the_prompt_is_told_apart_too() -> None:
    prompt = [{"role": "user", "content": "Combien de pommes reste-t-il si Anne en mange trois sur sept ?"}]
    result = REWARD(think(FR), {"prompt": prompt})
    assert (result.details["language"], result.details["target_from"], result.score) == ("fr", "prompt", 1.0)
    assert detect_language("How many apples are left if Ann eats three of seven?") == "en"
    assert detect_language("Wie viele Äpfel bleiben übrig, wenn Anna drei von sieben isst?") == "de"
    assert detect_language("Ok?") == "en"  # too short: the script's language


def test_hostile_input_scores_zero_with_a_reason_in_bounded_time() -> None:
    reward = get_reward("language")  # through the contract's wrapper: bytes, None, objects
    assert reward(b"<think>\xff\xfe" * 5000 + b"</think>", {"language": "en"}).details["error"] == "parse_error"
    binary = "<think>" + "".join(chr(c) for c in range(1, 32)) * 100 + "</think>"
    assert reward(binary, {"language": "en"}).details["error"] == "parse_error"
    for empty in ("", None, "<think></think>4", "<think>$$1+1=2$$ 12345</think>"):
        result = reward(empty, {"language": "en"})
        assert result.score == 0.0 and result.details["words"] == 0
    assert reward(object(), {"language": "en"}).score == 0.0
    assert reward(EN, {"language": 42}).details["target_from"] == "default"
    for huge in ("\\(" * 200_000, "\\[x " * 100_000, "$$x" * 100_000, EN * 10_000, "中a" * 500_000,
                 "é" * 1_000_000, "<a " * 300_000):
        start = time.perf_counter()
        result = reward("<think>" + huge, {"language": "en"})
        assert time.perf_counter() - start < 5.0 and 0.0 <= result.score <= 1.0
    result = reward("<think>" + EN * 10_000, {"language": "en"})
    assert result.details["judged_chars"] == 200_000 and result.score == 1.0


def test_the_labelled_set() -> None:
    """tests/unit/data/rewards/language_cases.jsonl (benchmarks/rewards_language.py reports the same)."""
    rows = []
    for line in CASES.read_text(encoding="utf-8").splitlines():
        case = json.loads(line)
        completion = case["completion"] if "completion" in case else "".join(piece * n for piece, n in case["repeat"])
        targets = case["targets"]
        if "parts" in case:
            counts: dict[str, int] = defaultdict(int)
            for lang, text in case["parts"]:
                counts[lang] += sum(1 for _ in words(text))
            targets = {t: counts[t] / sum(counts.values()) for t in targets}
        rows += [(case["id"], t, label, REWARD(completion, {"language": t}).score) for t, label in targets.items()]
    misses = [r for r in rows if abs(r[3] - r[2]) > 0.1]
    assert len(rows) > 300 and len(misses) <= len(rows) // 50, misses


def test_arguments_are_checked_before_a_run() -> None:
    assert reward_problem("language", {"languages": ["en", "fr", "xx"]})[0] == "args"
    assert reward_problem("language", {"languages": "en"})[0] == "args"
    assert reward_problem("language", {"min_margin": -1})[0] == "args"
    assert reward_problem("language", {"languages": ["english", "French", "zh"]}) is None
    script_only = LanguageReward(languages=["en", "zh"])  # one language per script: R1's script rule exactly
    assert script_only(think(FR), {"language": "en"}).details["method"] == "script"
    unknown = REWARD(think(EN), {"language": "tlh"})  # a target the identifier does not know
    assert unknown.score == 1.0 and "script only" in unknown.details["note"]


def test_the_rl_step_record_names_the_share() -> None:
    stage = RLStage.model_validate({
        "kind": "rl", "name": "rl", "model": "m", "data": ["d"], "steps": 1, "prompts_per_step": 1, "grpo": {"n": 2},
        "rewards": [{"name": "math"}, {"name": "language"}, {"name": "language", "label": "lang_strict"}]})
    rollouts = [Rollout(prompt_index=0, prompt_ids=[1], response_ids=[2, 3], text="x", response_logprobs=None,
                        finish_reason="stop", policy_version=0) for _ in range(2)]
    components = [{"math": 1.0, "language": 1.0, "lang_strict": 0.5}, {"math": 0.0, "language": 0.5,
                                                                        "lang_strict": 0.0}]
    batch = StepBatch(groups=[Group({"prompt": "p"}, [1], rollouts, [1.0, 0.0], components)])
    timing = StepTiming.of(batch, True, [], 1.0)
    record = step_record(stage, 1, batch, [], version=1, trained_tokens=6, timing=timing, t_start=0.0)
    assert record["language/target_share"] == record["reward/language_mean"] == 0.75
    assert record["language/lang_strict/target_share"] == 0.25
    assert not any(k.startswith("language/") for k in step_record(
        RLStage.model_validate({**stage.model_dump(), "rewards": [{"name": "math"}]}),
        1, batch, [], version=1, trained_tokens=6, timing=timing, t_start=0.0))

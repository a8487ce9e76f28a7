"""Length shaping as plain rewards: DAPO's soft overlong penalty and a brevity reward.

Both read the response length in tokens from `sample["response_length"]` (the RL stage records it for every
rollout), or measure the completion in characters or words when configured with `unit="chars"`/`"words"`.
"""

from __future__ import annotations

from typing import Any, Mapping

from rewards.base import RewardResult, as_text, failure


def response_length(completion: str, sample: Mapping[str, Any], unit: str, key: str) -> int | None:
    if unit == "chars":
        return len(completion)
    if unit == "words":
        return len(completion.split())
    value = sample.get(key)
    if isinstance(value, (list, tuple)):  # token ids
        return len(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return None


def _check(unit: str) -> None:
    if unit not in ("tokens", "chars", "words"):
        raise ValueError(f"unit must be tokens, chars or words, not '{unit}'.")


class OverlongPenalty:
    """DAPO soft overlong punishment: 0 up to max_length - cache_length, linear to -1 at max_length, -1 beyond."""

    def __init__(self, max_length: int, cache_length: int, unit: str = "tokens", length_key: str = "response_length"):
        _check(unit)
        if not 0 < cache_length <= max_length:
            raise ValueError("overlong: need 0 < cache_length <= max_length.")
        self.max_length, self.cache_length, self.unit, self.length_key = max_length, cache_length, unit, length_key

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        length = response_length(as_text(completion), sample, self.unit, self.length_key)
        if length is None:
            return failure("no_length", f"The sample has no '{self.length_key}' (response length in tokens).")
        free = self.max_length - self.cache_length
        if length <= free:
            score = 0.0
        elif length <= self.max_length:
            score = (free - length) / self.cache_length
        else:
            score = -1.0
        return RewardResult(score, {"length": length, "unit": self.unit})


class LengthReward:
    """Brevity: 1 up to target_length, falling linearly to 0 at max_length, 0 beyond."""

    def __init__(self, target_length: int, max_length: int, unit: str = "tokens", length_key: str = "response_length"):
        _check(unit)
        if not 0 <= target_length < max_length:
            raise ValueError("length: need 0 <= target_length < max_length.")
        self.target, self.max_length, self.unit, self.length_key = target_length, max_length, unit, length_key

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        length = response_length(as_text(completion), sample, self.unit, self.length_key)
        if length is None:
            return failure("no_length", f"The sample has no '{self.length_key}' (response length in tokens).")
        score = 1.0 - (length - self.target) / (self.max_length - self.target)
        return RewardResult(min(1.0, max(0.0, score)), {"length": length, "unit": self.unit})

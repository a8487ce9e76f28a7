"""The reward contract: `(completion: str, sample: Mapping) -> RewardResult`, and it never raises.

Model output is hostile: it can be huge, binary, malformed or adversarial. Rewards therefore coerce their
input with `as_text`, and every caller goes through `call_reward`, which turns any failure (an exception, a
non-finite score, a wrong return type) into a zero score whose `details["error"]` names the kind of failure
and whose `details["message"]` says what happened in a sentence.

Error kinds used across the package: `timeout`, `parse_error`, `no_answer`, `no_gold`, `no_code`,
`sandbox_error`, `memory_limit`, `reward_error`, `invalid_score`, `worker_crashed`, `http_error`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

# A completion longer than this is cut before any reward looks at it; the cut is reported in details.
MAX_COMPLETION_CHARS = 1_000_000


@dataclass(slots=True)
class RewardResult:
    score: float
    """The reward for one completion; finite."""
    details: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable breakdown; on failure holds `error` (a kind) and `message` (a sentence)."""


@runtime_checkable
class Reward(Protocol):
    """Anything callable as `reward(completion, sample) -> RewardResult`.

    A reward may also define `batch(completions, samples) -> list[RewardResult]` (an optimisation with the
    same per-sample meaning) and `close()` (to release helper processes).
    """

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> RewardResult: ...


# The error kinds that say the reward could not grade at all (its code, service, sandbox or the sample's gold answer
# failed), as opposed to a completion that earned its zero (no answer, unparsable, over its limits).
INFRA_ERRORS = frozenset({"timeout", "worker_crashed", "reward_error", "http_error", "invalid_score", "no_gold",
                          "sandbox_error"})


def infra_error(details: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, message) of the first failure in a sample's scoring details that is the reward's, not the
    completion's: a pool failure at the top level, or a component's error of an ``INFRA_ERRORS`` kind."""
    for d in [details, *(v for v in details.values() if isinstance(v, Mapping))]:
        if d.get("error") in INFRA_ERRORS:
            return d["error"], str(d.get("message", ""))
    return None


def failure(error: str, message: str, **details: Any) -> RewardResult:
    """A zero score that says why: `error` is a short kind, `message` a sentence for the user."""
    return RewardResult(0.0, {"error": error, "message": message, **details})


def as_text(value: Any, limit: int = MAX_COMPLETION_CHARS) -> str:
    """Coerce hostile input to a bounded `str`: bytes are decoded leniently, NULs dropped, length capped."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value[: 4 * limit]).decode("utf-8", errors="replace")
    elif not isinstance(value, str):
        try:
            value = str(value)
        except Exception:  # a hostile __str__ must not escape
            return ""
    if len(value) > limit:
        value = value[:limit]
    return value.replace("\x00", "")


def coerce_result(value: Any) -> RewardResult:
    """Accept what plugin authors naturally return (a RewardResult, a number, or `(score, details)`)."""
    if isinstance(value, RewardResult):
        result = value
    elif isinstance(value, bool) or isinstance(value, (int, float)):
        result = RewardResult(float(value), {})
    elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
        result = RewardResult(float(value[0]), dict(value[1]))
    else:
        return failure("invalid_score", f"The reward returned a {type(value).__name__}, not a RewardResult.")
    try:
        score = float(result.score)
    except (TypeError, ValueError):
        return failure("invalid_score", "The reward returned a score that is not a number.")
    if not math.isfinite(score):
        return failure("invalid_score", f"The reward returned a non-finite score ({score}).")
    details = result.details if isinstance(result.details, dict) else {"value": str(result.details)}
    return RewardResult(score, details)


def call_reward(fn: Any, completion: Any, sample: Mapping[str, Any]) -> RewardResult:
    """Call a reward so that nothing escapes: the one place the 'never raises' contract is enforced."""
    try:
        text = as_text(completion)
        result = coerce_result(fn(text, sample if isinstance(sample, Mapping) else {}))
    except Exception as exc:  # noqa: BLE001 - plugins are third-party code; report, never propagate
        return failure("reward_error", f"The reward raised {type(exc).__name__}: {_short(exc)}.")
    if isinstance(completion, str) and len(completion) > MAX_COMPLETION_CHARS:
        result.details.setdefault("truncated_chars", len(completion))
    return result


def _short(exc: BaseException, limit: int = 300) -> str:
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable>"
    return text[:limit].rstrip(".")

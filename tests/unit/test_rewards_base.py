"""The reward contract, the registry (names, dotted paths, entry points), specs and routing."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from rewards import registry
from rewards.base import RewardResult, as_text, call_reward
from rewards.config import RewardSpec, parse_specs
from rewards.registry import ENTRY_POINT_GROUP, get_reward, list_rewards, register_reward
from rewards.routing import RewardRouter, applicable, combine


def brevity(completion: str, sample: dict, *, target: int = 10) -> RewardResult:
    return RewardResult(1.0 if len(completion) <= target else 0.0, {"length": len(completion)})


def returns_float(completion: str, sample: dict) -> float:
    return 0.25


class Counting:
    """A class-based reward with arguments."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def __call__(self, completion: str, sample: dict) -> RewardResult:
        return RewardResult(self.factor * completion.count("a"), {})


class HostileText:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("fn", "error"),
    [
        (lambda c, s: 1 / 0, "reward_error"),
        (lambda c, s: float("nan"), "invalid_score"),
        (lambda c, s: RewardResult(math.inf), "invalid_score"),
        (lambda c, s: "high", "invalid_score"),
        (lambda c, s: (None, {}), "reward_error"),
    ],
)
def test_call_reward_never_raises(fn: object, error: str) -> None:
    result = call_reward(fn, "x", {})
    assert result.score == 0.0
    assert result.details["error"] == error
    assert result.details["message"].endswith(".")


def test_call_reward_coerces_plain_returns_and_hostile_input() -> None:
    assert call_reward(returns_float, "x", {}).score == 0.25
    assert call_reward(lambda c, s: (0.5, {"k": 1}), "x", {}).details == {"k": 1}
    assert call_reward(lambda c, s: RewardResult(len(c)), b"ab\x00\xffc", {}).score == 4.0
    assert as_text(HostileText()) == ""
    assert call_reward(lambda c, s: RewardResult(float(isinstance(s, dict))), "x", "not a mapping").score == 1.0


def test_get_reward_by_name_path_and_class() -> None:
    assert get_reward("format")("<think>a</think> b", {}).score == 1.0
    short = get_reward(f"{__name__}:brevity", target=3)
    assert short("abcd", {}).score == 0.0 and short("ab", {}).score == 1.0
    assert get_reward(f"{__name__}:Counting", factor=2.0)("banana", {}).score == 6.0
    assert {"math", "code", "format", "language", "overlong", "length", "http"} <= set(list_rewards())


@pytest.mark.parametrize(
    ("ref", "kwargs", "match"),
    [
        ("maht", {}, "Unknown reward 'maht'. Known names: .*code"),
        ("no_such_module_xyz:fn", {}, "Cannot import module"),
        (f"{__name__}:missing", {}, "has no attribute"),
        (f"{__name__}:brevity", {"nope": 1}, "cannot be called with args \\['nope'\\]"),
        (f"{__name__}:Counting", {"nope": 1}, "cannot be built with args \\['nope'\\]"),
    ],
)
def test_get_reward_errors_are_sentences(ref: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_reward(ref, **kwargs)


def test_register_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTERED", {})
    register_reward("shout")(lambda c, s: RewardResult(float(c.isupper())))
    assert get_reward("shout")("HI", {}).score == 1.0
    assert "shout" in list_rewards()
    with pytest.raises(ValueError, match="built in"):
        register_reward("math")(brevity)


def test_entry_point_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "acme_rewards.py").write_text(textwrap.dedent("""
        from rewards.base import RewardResult
        def polite(completion, sample):
            return RewardResult(float("please" in completion), {})
    """))
    dist = tmp_path / "acme_rewards-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-rewards\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\npolite = acme_rewards:polite\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "polite" in list_rewards()
    assert get_reward("polite")("yes please", {}).score == 1.0
    assert RewardSpec(name="polite").component == "polite"
    monkeypatch.delitem(sys.modules, "acme_rewards", raising=False)


def test_reward_spec_validation() -> None:
    assert RewardSpec.model_validate({"name": "math", "domains": ["math"]}).component == "math"
    assert RewardSpec(path="pkg.mod:my_fn").component == "my_fn"
    assert RewardSpec(http={"url": "http://127.0.0.1:9/score"}).component == "http"
    for bad, match in [
        ({"name": "math", "path": "a.b:c"}, "exactly one"),
        ({}, "exactly one"),
        ({"path": "not a path"}, "package.module:function"),
        ({"name": "math", "wieght": 2}, "Extra inputs"),
        ({"name": "maths"}, "Unknown reward name 'maths'"),
        ({"http": {"url": "ftp://x"}}, "http:// or https://"),
        ({"http": {"url": "http://x"}, "args": {"a": 1}}, "inside `http:`"),
    ]:
        with pytest.raises(ValidationError, match=match):
            RewardSpec.model_validate(bad)
    with pytest.raises(ValueError, match="give one of them a `label`"):
        parse_specs([{"name": "math"}, {"name": "math", "weight": 2}])
    assert len(parse_specs([{"name": "math"}, {"name": "math", "label": "math_strict"}])) == 2


def test_routing_by_domain_and_weights() -> None:
    specs = parse_specs([
        {"name": "format", "weight": 0.5},
        {"path": f"{__name__}:brevity", "weight": 2.0, "domains": ["general"], "args": {"target": 100}},
        {"path": f"{__name__}:Counting", "domains": ["math"], "label": "as"},
    ])
    assert [s.component for s in applicable(specs, "general")] == ["format", "brevity"]
    assert [s.component for s in applicable(specs, None)] == ["format"]
    combined = combine(specs, {"format": RewardResult(1.0), "brevity": RewardResult(1.0)})
    assert combined.total == 2.5 and combined.components == {"format": 1.0, "brevity": 1.0}
    router = RewardRouter(specs)
    scored = router.score("<think>a</think> aaa", {"domain": "math"})
    assert scored.components == {"format": 1.0, "as": 4.0} and scored.total == 4.5
    empty = RewardRouter([{"name": "format", "domains": ["math"]}]).score("x", {"domain": "code"})
    assert empty.total == 0.0 and "No reward applies" in empty.details["routing"]["message"]

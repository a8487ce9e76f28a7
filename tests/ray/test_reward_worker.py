"""RewardWorker as a Ray actor on a local CPU Ray: routing by domain, weights, counters, deadlines."""

from __future__ import annotations

import shutil
import time

import pytest

from actors.reward import RewardScores, RewardWorker
from rewards.base import RewardResult
from rewards.config import RewardSpec


def stall(completion: str, sample: dict) -> RewardResult:
    """A plugin that never finishes on purpose."""
    time.sleep(120)
    return RewardResult(1.0)


SPECS = [
    {"name": "math", "domains": ["math"], "args": {"timeout_s": 5}},
    {"name": "code", "domains": ["code"], "args": {"time_limit_s": 2}},
    {"name": "format", "weight": 0.1},
    {"path": f"{__name__}:stall", "domains": ["stall"]},
]


def test_reward_worker_as_ray_actor(ray_local) -> None:
    if not (shutil.which("bwrap") or shutil.which("unshare")):
        pytest.skip("no sandbox backend for the code reward")
    ray = ray_local
    worker = ray.remote(num_cpus=2)(RewardWorker).remote(SPECS, num_procs=2, deadline_s=8.0)
    fmt = "<think>work</think>"
    completions = [
        fmt + r"The answer is \boxed{\frac{1}{2}}",
        fmt + r"\boxed{3}",
        fmt + "```python\nprint(int(input()) * 2)\n```",
        "no format, general chat",
        fmt + "anything",
    ]
    samples = [
        {"domain": "math", "answer": "0.5"},
        {"domain": "math", "answer": "4"},
        {"domain": "code", "tests": {"inputs": ["2", "5"], "outputs": ["4", "10"]}},
        {"domain": "general"},
        {"domain": "stall"},
    ]
    try:
        start = time.monotonic()
        result = ray.get(worker.score.remote(completions, samples), timeout=300)
        elapsed = time.monotonic() - start
        assert isinstance(result, RewardScores)
        assert result.scores == pytest.approx([1.1, 0.1, 1.1, 0.0, 0.0])
        assert result.components[0] == {"math": 1.0, "format": 1.0}
        assert result.components[2] == {"code": 1.0, "format": 1.0}
        assert result.components[3] == {"format": 0.0}
        assert result.details[2]["code"]["verdicts"] == ["passed", "passed"]
        assert result.details[4]["error"] == "timeout"
        assert (result.timeouts, result.errors) == (1, 0)
        assert 0 < result.mean_latency_s < elapsed
        assert elapsed < 60
        assert ray.get(worker.components.remote()) == ["math", "code", "format", "stall"]
        again = ray.get(worker.score.remote(completions[:1], samples[:1]), timeout=120)
        assert again.scores == pytest.approx([1.1])  # the pool recovered from the killed process
    finally:
        ray.get(worker.close.remote())
        ray.kill(worker)


def test_reward_worker_without_ray() -> None:
    worker = RewardWorker([RewardSpec(name="format")], num_procs=1, deadline_s=10)
    try:
        result = worker.score(["<think>a</think>b", "b"], [{}, {}])
        assert result.scores == [1.0, 0.0] and result.errors == 0 and result.timeouts == 0
    finally:
        worker.close()

"""Host-side rewards (`in_host`: http, reward_model) under the pool's deadline: they run beside the pool's
processes, time out like pooled samples, and their failures are counted, never raised."""

from __future__ import annotations

import threading
import time

import pytest

from actors.reward import RewardWorker
from rewards.http_reward import HttpReward
from rewards.isolation.pool import RewardPool
from tests.scoring_service import Service

HERE = __name__


class Broken:
    """A host reward that fails the way it is told to: raise, too few results, or a non-finite score."""

    in_host = True

    def __init__(self, how: str) -> None:
        self.how = how

    def __call__(self, completion: str, sample: dict) -> float:
        return self.batch([completion], [sample])[0]

    def batch(self, completions: list, samples: list) -> list:
        if self.how == "raise":
            raise RuntimeError("the model went away")
        return [float("nan")] * len(completions) if self.how == "nan" else [1.0] * (len(completions) - 1)


class Stuck:
    """A host reward whose first call hangs until RELEASE is set; it records how many calls ran at once."""

    in_host = True
    RELEASE = threading.Event()
    active = most = calls = 0

    def __call__(self, completion: str, sample: dict) -> float:
        return self.batch([completion], [sample])[0]

    def batch(self, completions: list, samples: list) -> list:
        cls = type(self)
        cls.calls += 1
        cls.active += 1
        cls.most = max(cls.most, cls.active)
        try:
            if cls.calls == 1:
                cls.RELEASE.wait(30)
            return [2.0] * len(completions)
        finally:
            cls.active -= 1


class Slow:
    """A host reward that takes 2 s per batch."""

    in_host = True

    def __call__(self, completion: str, sample: dict) -> float:
        return self.batch([completion], [sample])[0]

    def batch(self, completions: list, samples: list) -> list:
        time.sleep(2.0)
        return [1.0] * len(completions)


def slow_length(completion: str, sample: dict) -> float:
    """A pooled reward that takes 2 s per sample."""
    time.sleep(2.0)
    return float(len(completion))


def timed(pool: RewardPool, completions: list[str]) -> tuple[list, float]:
    start = time.monotonic()
    results = pool.score(completions, [{} for _ in completions])
    return results, time.monotonic() - start


def test_a_slow_service_times_out_within_the_deadline_and_the_next_batch_works(service: Service) -> None:
    service.delay = 5.0
    spec = {"http": {"url": service.url, "timeout_s": 30, "retries": 3}}
    with RewardPool([spec, {"name": "format", "weight": 0.5}], num_procs=1, deadline_s=1.0) as pool:
        results, wall = timed(pool, ["ab", "<think>a</think>b"])
        assert wall < 4.0
        assert [r.total for r in results] == [0.0, 0.5]
        assert all(r.timed_out and not r.failed for r in results)
        assert all(r.details["http"]["error"] == "timeout" and "deadline" in r.details["http"]["message"]
                   for r in results)
        assert all(0.5 < r.latency_s < 4.0 for r in results)
        service.delay = 0.0
        again, _ = timed(pool, ["ab", "abc"])
        assert [r.components["http"] for r in again] == [2.0, 3.0]
        assert not any(r.timed_out or r.failed for r in again)


def test_http_reward_ends_by_its_deadline_whatever_its_timeout_and_retries(service: Service) -> None:
    reward = HttpReward(service.url, timeout_s=30, retries=3)
    service.delay = 5.0
    start = time.monotonic()
    slow = reward.batch(["a", "b"], [{}, {}], deadline=start + 1.0)
    assert time.monotonic() - start < 3.0
    assert all(r.details["error"] == "timeout" and service.url in r.details["message"] for r in slow)
    service.delay, service.status = 0.0, 503  # back-off 0.5, 1, 2, 4 s would take 7.5 s
    start = time.monotonic()
    failing = HttpReward(service.url, timeout_s=30, retries=4).batch(["a"], [{}], deadline=start + 1.2)
    assert time.monotonic() - start < 3.0
    assert failing[0].details["error"] == "timeout" and "HTTP 503" in failing[0].details["message"]
    service.status = 200
    assert [r.score for r in reward.batch(["abc"], [{}], deadline=time.monotonic() + 5)] == [3.0]


@pytest.mark.parametrize("how,says", [("raise", "RuntimeError: the model went away"),
                                      ("short", "returned 1 results for 2 samples"),
                                      ("nan", "non-finite score")])
def test_a_failing_host_reward_gives_per_sample_errors(how: str, says: str) -> None:
    specs = [{"path": f"{HERE}:Broken", "args": {"how": how}}, {"name": "format"}]
    with RewardPool(specs, num_procs=1, deadline_s=5.0) as pool:
        results, _ = timed(pool, ["<think>a</think>b", "c"])
    assert [r.components["Broken"] for r in results] == [0.0, 0.0]
    assert [r.total for r in results] == [1.0, 0.0]
    assert all(r.failed and not r.timed_out and says in r.details["Broken"]["message"] for r in results)
    assert {r.details["Broken"]["error"] for r in results} <= {"reward_error", "invalid_score"}


def test_a_hung_host_reward_times_out_and_is_never_called_twice_at_once() -> None:
    with RewardPool([{"path": f"{HERE}:Stuck"}], num_procs=1, deadline_s=1.0) as pool:
        first, wall = timed(pool, ["a", "b"])
        assert wall < 4.0 and all(r.timed_out and r.total == 0.0 for r in first)
        assert "did not answer within the 1 s deadline" in first[0].details["Stuck"]["message"]
        second, wall = timed(pool, ["a"])  # the first call is still running
        assert wall < 4.0 and second[0].timed_out
        assert "previous call" in second[0].details["Stuck"]["message"]
        assert Stuck.calls == 1
        Stuck.RELEASE.set()
        for _ in range(100):
            if not Stuck.active:
                break
            time.sleep(0.05)
        third, _ = timed(pool, ["a"])
    assert third[0].total == 2.0 and not third[0].timed_out  # the late result of the first call was dropped
    assert (Stuck.calls, Stuck.most) == (2, 1)


def test_host_and_pooled_rewards_overlap() -> None:
    specs = [{"path": f"{HERE}:slow_length"}, {"path": f"{HERE}:Slow"}]
    with RewardPool(specs, num_procs=1, deadline_s=10.0) as pool:
        results, wall = timed(pool, ["abc"])
    assert results[0].components == {"slow_length": 3.0, "Slow": 1.0}
    assert 2.0 <= wall < 3.5  # 4 s one after the other
    assert 2.0 <= results[0].latency_s <= wall


def test_reward_worker_counts_host_failures_and_timeouts() -> None:
    Stuck.RELEASE.clear()
    Stuck.calls = 0
    specs = [{"path": f"{HERE}:Stuck", "domains": ["slow"]}, {"path": f"{HERE}:Broken", "args": {"how": "raise"},
                                                             "domains": ["broken"]}]
    worker = RewardWorker(specs, num_procs=1, deadline_s=1.0)
    try:
        scores = worker.score(["a", "b", "c"], [{"domain": "slow"}, {"domain": "broken"}, {"domain": "broken"}])
    finally:
        Stuck.RELEASE.set()
        worker.close()
    assert (scores.timeouts, scores.errors) == (1, 2)
    assert scores.scores == [0.0, 0.0, 0.0]
    assert scores.details[0]["Stuck"]["error"] == "timeout" and scores.details[1]["Broken"]["error"] == "reward_error"
    assert 0.0 < scores.mean_latency_s < 4.0

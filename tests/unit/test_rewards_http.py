"""The http reward against a scoring service on the loopback interface."""

from __future__ import annotations

from rewards.http_reward import HttpReward
from rewards.registry import get_reward
from tests.scoring_service import Service


def test_batches_are_split_and_kept_in_order(service: Service) -> None:
    reward = HttpReward(service.url, batch_size=2)
    results = reward.batch(["a", "bb", "ccc", "dddd", "e"], [{"i": i} for i in range(5)])
    assert [r.score for r in results] == [1.0, 2.0, 3.0, 4.0, 1.0]
    assert [len(r["completions"]) for r in service.requests] == [2, 2, 1]
    assert service.requests[0]["samples"] == [{"i": 0}, {"i": 1}]
    assert results[1].details == {"n": 1}


def test_server_errors_are_retried(service: Service) -> None:
    service.script = ["503", "500"]
    assert HttpReward(service.url, retries=2)("abc", {}).score == 3.0
    assert len(service.requests) == 3


def test_client_errors_are_not_retried(service: Service) -> None:
    service.script = ["400"]
    result = HttpReward(service.url, retries=3)("abc", {})
    assert result.details["error"] == "http_error" and "HTTP 400" in result.details["message"]
    assert len(service.requests) == 1


def test_timeouts_and_bad_answers_fail_with_a_sentence(service: Service) -> None:
    service.script = ["slow", "slow"]
    result = HttpReward(service.url, timeout_s=0.2, retries=1)("abc", {})
    assert "no answer within 0.2 s" in result.details["message"] and service.url in result.details["message"]
    service.script = ["short"]
    bad = HttpReward(service.url, retries=0).batch(["a", "b"], [{}, {}])
    assert all(r.details["error"] == "http_error" for r in bad)


def test_unreachable_service() -> None:
    result = get_reward("http://127.0.0.1:9/score", retries=0, timeout_s=1)("abc", {})
    assert result.score == 0.0 and "connection failed" in result.details["message"]

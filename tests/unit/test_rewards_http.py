"""The http reward against a scoring service on the loopback interface."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from rewards.http_reward import HttpReward
from rewards.registry import get_reward


class Service:
    """A scriptable scoring service: each request pops the next behaviour (default: score by length)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.requests.append(body)
                action = service.script.pop(0) if service.script else "ok"
                if action == "slow":
                    time.sleep(1.0)
                if action.isdigit():
                    self.send_response(int(action))
                    self.end_headers()
                    self.wfile.write(b"nope")
                    return
                scores = [float(len(c)) for c in body["completions"]]
                if action == "short":
                    scores = scores[:-1]
                payload = {"scores": scores, "details": [{"n": i} for i in range(len(scores))]}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/score"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def service() -> Iterator[Service]:
    s = Service()
    yield s
    s.server.shutdown()
    s.server.server_close()


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

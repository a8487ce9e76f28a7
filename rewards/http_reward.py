"""`http`: score batches with the user's own service.

Protocol: POST `{"completions": [str, …], "samples": [object, …]}` as JSON to `url`; the service answers
200 with `{"scores": [float, …]}` (same length, same order) and optionally `"details": [object, …]`.
Connection errors, timeouts, 429 and 5xx are retried `retries` times with exponential back-off; other
statuses are not. When the service cannot answer, every sample of the batch scores 0 with
`details["error"] = "http_error"` and a sentence naming the URL and what went wrong. Given a deadline (the reward
pool passes its own), no request waits past it and no retry starts after it: a service too slow for it ends as
`timeout` by then, whatever `timeout_s` and `retries` would allow.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Mapping

import requests

from rewards.base import RewardResult, as_text, failure

_BACKOFF_S = 0.5


class HttpReward:
    """POSTs batches of completions to a scoring service over HTTP (timeouts, retries, clear errors)."""

    def __init__(self, url: str, timeout_s: float = 30.0, retries: int = 2, batch_size: int = 64,
                 headers: dict[str, str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"http: url must start with http:// or https://, got '{url}'.")
        self.url, self.timeout_s, self.retries, self.batch_size = url, timeout_s, retries, batch_size
        self.headers = dict(headers or {})
        self._session = requests.Session()

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        return self.batch([completion], [sample])[0]

    def batch(self, completions: list[Any], samples: list[Mapping[str, Any]],
              deadline: float | None = None) -> list[RewardResult]:
        """One result per sample, in order; `deadline` is a time.monotonic() instant that bounds every request."""
        results: list[RewardResult] = []
        for start in range(0, len(completions), self.batch_size):
            chunk_c = [as_text(c) for c in completions[start : start + self.batch_size]]
            chunk_s = [dict(s) for s in samples[start : start + self.batch_size]]
            results.extend(self._post(chunk_c, chunk_s, deadline))
        return results

    def _post(self, completions: list[str], samples: list[dict[str, Any]],
              deadline: float | None) -> list[RewardResult]:
        body = json.dumps({"completions": completions, "samples": samples}, default=str)
        headers = {"Content-Type": "application/json", **self.headers}
        problem, attempts, out_of_time = "", 0, False
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(max(0.0, min(_BACKOFF_S * 2 ** (attempt - 1), _left(deadline))))
            timeout = min(self.timeout_s, _left(deadline))
            if timeout <= 0:
                out_of_time = True
                break
            attempts += 1
            try:
                response = self._session.post(self.url, data=body, headers=headers, timeout=timeout)
            except requests.Timeout:
                problem, out_of_time = f"no answer within {timeout:.3g} s", timeout < self.timeout_s
                continue
            except requests.RequestException as exc:
                problem = f"the connection failed ({type(exc).__name__})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"it answered HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                problem = f"it answered HTTP {response.status_code}: {response.text[:200]!r}"
                break  # a client error will not fix itself
            return self._parse(response, len(completions))
        if out_of_time:
            message = (f"The scoring service at {self.url} did not answer before the reward's deadline "
                       f"({attempts} attempt(s){'; last: ' + problem if problem else ''}).")
            return [failure("timeout", message) for _ in completions]
        message = f"The scoring service at {self.url} failed after {attempts} attempt(s): {problem}."
        return [failure("http_error", message) for _ in completions]

    def _parse(self, response: requests.Response, n: int) -> list[RewardResult]:
        try:
            payload = response.json()
            scores = payload["scores"]
            details = payload.get("details") or [{} for _ in scores]
            if len(scores) != n or len(details) != n:
                raise ValueError(f"{len(scores)} scores for {n} completions")
            return [_result(score, detail) for score, detail in zip(scores, details)]
        except (ValueError, KeyError, TypeError) as exc:
            message = f"The scoring service at {self.url} sent an unusable answer ({exc}); expected {{\"scores\": [...]}}."
            return [failure("http_error", message) for _ in range(n)]

    def close(self) -> None:
        self._session.close()


def _left(deadline: float | None) -> float:
    return math.inf if deadline is None else deadline - time.monotonic()


def _result(score: Any, detail: Any) -> RewardResult:
    value = float(score)
    if not math.isfinite(value):
        return failure("invalid_score", f"The scoring service returned a non-finite score ({score}).")
    return RewardResult(value, detail if isinstance(detail, dict) else {"value": detail})

"""The reward pool (deadlines, crashes, batch rewards) and the `python -m rewards` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewards.base import RewardResult
from rewards.isolation.pool import RewardPool

ROOT = Path(__file__).resolve().parents[2]


def behave(completion: str, sample: dict) -> RewardResult:
    """A plugin that does what the completion says: sleep, die, or score its length."""
    if completion == "sleep":
        time.sleep(60)
    if completion == "die":
        os._exit(3)
    return RewardResult(float(len(completion)), {"pid": os.getpid()})


@pytest.fixture(scope="module")
def pool() -> RewardPool:
    p = RewardPool([{"path": f"{__name__}:behave", "label": "len"}, {"name": "format", "weight": 0.5}],
                   num_procs=2, deadline_s=2.0)
    yield p
    p.close()


def test_scores_are_weighted_and_in_order(pool: RewardPool) -> None:
    results = pool.score(["<think>a</think>b", "xy", "z"], [{}, {}, {}])
    assert [r.total for r in results] == [17.5, 2.0, 1.0]
    assert results[0].components == {"len": 17.0, "format": 1.0}
    assert not any(r.failed or r.timed_out for r in results)


def test_deadline_kills_only_the_slow_sample(pool: RewardPool) -> None:
    start = time.monotonic()
    results = pool.score(["a", "sleep", "bbb", "cc"], [{}] * 4)
    assert time.monotonic() - start < 10
    assert [r.total for r in results] == [1.0, 0.0, 3.0, 2.0]
    assert results[1].timed_out and results[1].details["error"] == "timeout"
    assert "2 s deadline" in results[1].details["message"]
    assert pool.score(["abcd"], [{}])[0].total == 4.0  # the replacement process works


def test_crashed_process_is_replaced(pool: RewardPool) -> None:
    results = pool.score(["die", "ok"], [{}, {}])
    assert results[0].failed and results[0].details["error"] == "worker_crashed"
    assert results[1].total == 2.0
    assert all(not r.failed for r in pool.score(["a", "b", "c"], [{}] * 3))


def test_pool_rejects_mismatched_batches(pool: RewardPool) -> None:
    with pytest.raises(ValueError, match="must match"):
        pool.score(["a"], [])


def test_broken_reward_config_fails_at_start() -> None:
    with pytest.raises(RuntimeError, match="failed to start"):
        RewardPool([{"name": "overlong", "args": {"max_length": 1, "cache_length": 5}}], num_procs=1)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rewards", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_cli_list() -> None:
    out = _cli("list")
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert {"math", "code", "format", "language"} <= set(names)


def test_cli_score_keeps_one_line_per_input_in_order(tmp_path: Path) -> None:
    rows = [
        {"completion": "<think>x</think> \\boxed{4}", "answer": "4", "id": 1},
        "not json",
        {"completion": "The answer is 5", "answer": "6", "id": 3},
        [1, 2],
        {"id": 5},
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n\n")
    out = _cli("score", "math", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    assert [line.get("id") for line in lines] == [1, None, 3, None, 5, None]
    assert [line["reward"] for line in lines] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert lines[0]["details"]["extracted"] == "4" and lines[0]["answer"] == "4"
    assert lines[1]["details"]["error"] == "parse_error"
    assert lines[4]["details"]["error"] == "no_gold"


def test_cli_reports_unknown_rewards(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("{}\n")
    out = _cli("score", "maths", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o.jsonl"))
    assert out.returncode == 2 and out.stderr.startswith("error: Unknown reward name 'maths'. Known: code")

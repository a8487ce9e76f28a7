"""Actors killed by pid (kill -9, found by their process title as an operator would) while an RL stage runs: each is
replaced and the stage completes with steps 1..N, once each. Past the restart budget, and when no reward can grade
anything, the stage fails with a sentence instead of reporting success."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from orchestrator.driver import StageFailed, run_pipeline
from tests.ray.rl_pipeline import rl_pipeline

pytestmark = pytest.mark.slow

class Killer(threading.Thread):
    """Kills one process titled ``ray::<Class>`` (of this test's Ray) when the stage's metrics.jsonl reaches each
    planned step."""

    def __init__(self, metrics: Path, plan: list[tuple[int, str]]):
        super().__init__(daemon=True)
        self.metrics, self.plan, self.killed = metrics, list(plan), []
        self.stop = threading.Event()

    def run(self) -> None:
        while self.plan and not self.stop.is_set():
            try:
                done = max((json.loads(line)["step"] for line in self.metrics.read_text().splitlines()), default=0)
            except (OSError, ValueError):
                done = 0
            if done >= self.plan[0][0]:
                step, title = self.plan.pop(0)
                # Only this test's Ray (started by this process) is searched: never another job's actors.
                victim = next(p for p in psutil.Process().children(recursive=True)
                              if (p.cmdline() or [""])[0].startswith(f"ray::{title}"))
                os.kill(victim.pid, signal.SIGKILL)
                self.killed.append((done, title, victim.pid))
            time.sleep(0.1)


def test_killed_actors_are_replaced_and_every_step_runs_once(ray_local, tiny_checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    killer = Killer(run_dir / "rl" / "metrics.jsonl",
                    [(2, "RolloutWorker"), (3, "RewardWorker"), (5, "PolicyTrainer")])
    killer.start()
    try:
        summary = run_pipeline(rl_pipeline(tiny_checkpoint), run_dir)
    finally:
        killer.stop.set()
    assert [title for _, title, _ in killer.killed] == ["RolloutWorker", "RewardWorker", "PolicyTrainer"]
    assert summary["status"] == "succeeded"
    records = [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["policy_version"] for r in records] == [1, 2, 3, 4, 5, 6]   # no step trained twice or skipped
    assert records[-1]["restarts"] == 3
    restarts = summary["stages"][0]["metrics"]["restarts"]
    assert (restarts["total"], restarts["rollout"], restarts["reward"], restarts["trainer"]) == (3, 1, 1, 1)
    assert {e["node"] for e in restarts["events"]} == {"127.0.0.1"}
    # The trainer was lost after step 5's record; the stage went back to its step-4 checkpoint and ran 5 and 6 again.
    assert summary["stages"][0]["metrics"]["checkpoints"]["written"] >= 2


def test_killed_actors_are_replaced_in_asynchronous_steps(ray_local, tiny_checkpoint, tmp_path):
    """A rollout worker lost while the next batch is collected (the step trains meanwhile), then a trainer rank:
    every step still trains once, on a batch at most one version old."""
    run_dir = tmp_path / "run"
    killer = Killer(run_dir / "rl" / "metrics.jsonl", [(2, "RolloutWorker"), (4, "PolicyTrainer")])
    killer.start()
    try:
        summary = run_pipeline(rl_pipeline(tiny_checkpoint, async_rl="{max_staleness: 1}"), run_dir)
    finally:
        killer.stop.set()
    assert [title for _, title, _ in killer.killed] == ["RolloutWorker", "PolicyTrainer"]
    assert summary["status"] == "succeeded"
    records = [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["policy_version"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(r["policy_version_lag_max"] <= 1 for r in records)
    restarts = summary["stages"][0]["metrics"]["restarts"]
    assert (restarts["total"], restarts["rollout"], restarts["trainer"]) == (2, 1, 1)


def test_past_its_restart_budget_the_stage_fails_naming_the_actor(ray_local, tiny_checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    killer = Killer(run_dir / "rl" / "metrics.jsonl", [(1, "RolloutWorker")])
    killer.start()
    try:
        with pytest.raises(StageFailed) as info:
            run_pipeline(rl_pipeline(tiny_checkpoint, steps=4, restarts=0), run_dir)
    finally:
        killer.stop.set()
    message = str(info.value)
    assert "RolloutWorker rank 0 on node 127.0.0.1 died" in message and "max_restarts=0" in message
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stages"][0]["status"] == "failed"


def test_a_step_whose_rewards_all_failed_fails_the_stage(ray_local, tiny_checkpoint, tmp_path):
    rewards = "[{path: 'tests.ray.test_faults:broken_reward'}]"
    with pytest.raises(StageFailed) as info:
        run_pipeline(rl_pipeline(tiny_checkpoint, steps=1, rewards=rewards), tmp_path / "run")
    message = str(info.value)
    assert "could not grade any of the 16 samples of step 1" in message and "reward_error 16" in message
    assert "the grader's database is down" in message


def broken_reward(completion: str, sample: dict) -> float:
    raise ConnectionError("the grader's database is down")

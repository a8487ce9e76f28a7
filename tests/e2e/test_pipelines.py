"""Whole pipelines through the command line, as a user runs them: embedded Ray, and `ray job submit`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.own_processes import stop_processes_under

pytestmark = pytest.mark.slow
SUMMARY_KEYS = {"name", "kind", "status", "seconds", "metrics", "eval", "artifacts"}
STAGES = ["cold_start", "reasoning_rl", "rs", "sft2", "all_scenario_rl", "final_eval"]


def _run(args: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _check_smoke_summary(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["pipeline"] == "smoke" and summary["status"] == "succeeded"
    assert [s["name"] for s in summary["stages"]] == STAGES
    by_name = {s["name"]: s for s in summary["stages"]}
    for stage in summary["stages"]:
        assert SUMMARY_KEYS <= stage.keys() and stage["status"] == "succeeded"
        if stage["kind"] != "rejection_sampling":
            assert 0.0 <= stage["eval"]["pass@1"] <= 1.0
        if stage["kind"] in ("sft", "rl"):
            assert (run_dir / stage["artifacts"]["checkpoint"] / "model.safetensors").exists()
    final = by_name["final_eval"]["eval"]
    assert final["samples_per_problem"] == 4 and "cons@4" in final
    assert set(final["per_domain"]) == {"math", "general"} and final["problems"] == 32 + 16
    _check_smoke_rs(run_dir, by_name["rs"])
    mixed = [json.loads(line) for line in (run_dir / "all_scenario_rl" / "metrics.jsonl").read_text().splitlines()]
    assert all("reward/language_mean" in r for r in mixed)          # applies to every domain
    seen = set().union(*(r.keys() for r in mixed))                     # a step may draw one domain only
    assert {"reward/math_mean", "reward/instruction_mean"} <= seen
    return summary


def _check_smoke_rs(run_dir: Path, rs: dict) -> None:
    """Rejection sampling wrote an SFT set with provenance, and its report accounts for every sample."""
    report = rs["metrics"]["filter_report"]
    assert report["candidates"] == 16 * 4
    assert report["kept"] + sum(report["dropped"].values()) == report["candidates"]
    rows = [json.loads(line) for line in (run_dir / rs["artifacts"]["data"]).read_text().splitlines()]
    assert len(rows) == report["kept"] + report["mixed_in"] and report["mixed_in"] == round(0.5 * report["kept"])
    for row in rows:
        assert row["response"] and row["prompt"]
        if row["source"].get("stage") == "rs":  # sampled here, not mixed in
            assert row["rewards"]["math"] == 1.0 and row["rewards"]["format"] == 1.0
            assert row["source"]["checkpoint"] == "reasoning_rl" and row["source"]["policy_version"] >= 3
        else:
            assert row["source"]["dataset"] == "general_sft" and row["domain"] == "general"


def _check_smoke_rl(run_dir: Path) -> None:
    """The RL stage ran its steps through every phase, synced weights and checkpointed mid-stage."""
    steps = [json.loads(line) for line in (run_dir / "reasoning_rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert steps[-1]["policy_version"] >= 3  # two mini-batches per step, minus any with nothing to train
    for r in steps:
        assert r["groups"] >= 1 and r["generate_s"] > 0 and r["reward_s"] > 0 and r["train_s"] > 0
        assert r["sync_s"] > 0 and r["logprob_s"] > 0  # two mini-batches: old logprobs are recomputed
        assert r["policy_version_lag"] == 0.0 and "kl" in r and "entropy" in r and "clip_frac" in r
        assert {"reward/math_mean", "reward/format_mean", "drawn_pass_rate"} <= r.keys()  # dynamic sampling on
    metrics = json.loads((run_dir / "reasoning_rl" / "status.json").read_text())["metrics"]
    assert metrics["weight_sync"] == "object_store" and [d["step"] for d in metrics["dev_curve"]] == [0, 2, 3]
    # checkpoint_every 2 of 3 steps: one resumable checkpoint, removed once the stage is recorded as finished.
    assert metrics["checkpoints"]["written"] == 1 and metrics["checkpoints"]["resumed_from_step"] is None
    assert not (run_dir / "reasoning_rl" / "checkpoints").exists()


def test_smoke_pipeline_runs_then_skips_finished_stages(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "orchestrator", "run", "pipelines/smoke.yaml", "--run-dir", str(run_dir),
           "--address", "local"]
    first = _run(cmd, timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    summary = _check_smoke_summary(run_dir)
    _check_smoke_rl(run_dir)
    steps = [json.loads(line) for line in (run_dir / "cold_start" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in steps if "loss" in r]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert any("dev_pass@1" in r for r in steps)  # early stopping evaluated on held-out prompts
    assert (run_dir / "events" / "cold_start").is_dir()

    status = run_dir / "cold_start" / "status.json"
    stamp = status.stat().st_mtime_ns
    t0 = time.perf_counter()
    again = _run(cmd, timeout=120)
    assert again.returncode == 0, again.stderr[-4000:]
    assert time.perf_counter() - t0 < 30, "re-running a finished pipeline should not start any work"
    assert all(f"{name}: already finished" in again.stderr for name in STAGES)
    assert status.stat().st_mtime_ns == stamp
    assert json.loads((run_dir / "summary.json").read_text()) == summary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    token = Path.home() / ".ray" / "auth_token"
    headers = {"Authorization": f"Bearer {token.read_text().strip()}"} if token.exists() else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return json.loads(r.read())


def test_ray_job_submit_against_a_loopback_head(tmp_path):
    venv_bin = str(Path(sys.executable).parent)
    # Token auth on both sides, as Ray sets up a new local cluster by default (the token lives in ~/.ray).
    env = {"PATH": venv_bin + os.pathsep + os.environ["PATH"], "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # keeps the head on 127.0.0.1 (orchestrator/loopback.py)
    # A fresh machine has no token yet; `ray start` in token mode needs one (the CLI makes it once).
    token = _run([f"{venv_bin}/ray", "get-auth-token", "--generate"], timeout=60, env=env)
    assert token.returncode == 0, token.stderr[-2000:]
    port, dash = _free_port(), _free_port()
    temp_dir = Path("/tmp") / f"rayjob{os.getpid()}"  # short: Ray's unix sockets have a path-length limit
    start = _run([f"{venv_bin}/ray", "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                  "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "3",
                  "--temp-dir", str(temp_dir), "--disable-usage-stats",
                  # Own agent ports: another Ray on this machine (a test's local one) holds the defaults, and a
                  # head whose job agent cannot bind never accepts jobs.
                  "--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port",
                  str(_free_port()), "--metrics-export-port", str(_free_port()), "--runtime-env-agent-port",
                  str(_free_port())], timeout=180, env=env)
    assert start.returncode == 0, start.stderr[-3000:]
    try:
        run_dir = tmp_path / "job-run"
        cmd = [f"{venv_bin}/ray", "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", ".",
               "--", "python", "-m", "orchestrator", "run", "pipelines/smoke.yaml", "--run-dir", str(run_dir)]
        for _ in range(12):  # right after `ray start` the head's job agent may not have registered yet
            submit = _run(cmd, timeout=900, env=env)
            if "No available agent to submit job" not in submit.stderr + submit.stdout:
                break
            time.sleep(5)
        assert submit.returncode == 0, (submit.stdout + submit.stderr)[-4000:]
        assert "succeeded" in submit.stdout
        _check_smoke_summary(run_dir)
        jobs = _get_json(f"http://127.0.0.1:{dash}/api/jobs/")
        assert any(j["status"] == "SUCCEEDED" and "smoke.yaml" in j["entrypoint"] for j in jobs)
        actors = _get_json(f"http://127.0.0.1:{dash}/api/v0/actors?limit=1000")
        classes = {a["class_name"] for a in actors["data"]["result"]["result"]}
        assert {"PolicyTrainer", "RolloutWorker"} <= classes, classes
        nodes = _get_json(f"http://127.0.0.1:{dash}/api/v0/nodes?limit=10")["data"]["result"]["result"]
        assert {n["node_ip"] for n in nodes} == {"127.0.0.1"}
    finally:
        stop_processes_under(str(temp_dir))  # this head's processes only; `ray stop` would end every Ray here

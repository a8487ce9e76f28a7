"""Kill the whole job (the driver and its embedded Ray, kill -9) during SFT, during RL and during rejection sampling;
each re-run of the same command resumes where the last checkpoint left it, and the finished run's per-step metrics
equal an uninterrupted run's, value for value (on one machine: the trainer state, every RNG and the data position
are restored, and vLLM on CPU samples from the process's torch generator, which the checkpoint holds too)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.own_processes import stop_processes_under

pytestmark = pytest.mark.slow

PIPELINE = """\
name: resume
cluster: {trainer: {workers: 1, cpus: 1}, rollout: {workers: 1, cpus: 1}, reward: {workers: 1, cpus: 0.5}}
rollout: {dtype: float32, max_model_len: 256, kv_cache_gib: 1}
datasets:
  sft: {synthetic: {split: sft, size: 256, digits: 1}}
  dev: {synthetic: {split: dev, size: 8, digits: 1}}
  prompts: {synthetic: {split: rl, size: 48, digits: 1}}
models:
  tiny:
    init:
      arch: qwen2
      config: {hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 2,
               num_key_value_heads: 1}
      tokenizer: {vocab_size: 400, train_on: [sft]}
stages:
  - name: sft
    kind: sft
    model: tiny
    data: [sft]
    train: {steps: 12, batch_size: 16, micro_batch_size: 8, max_seq_len: 192, optim: {lr: 3.0e-3, warmup_steps: 2}}
    early_stopping: {every_steps: 4, patience: 5, data: dev}
    checkpoint_every: 5
  - name: rl
    kind: rl
    model: {from: sft}
    data: [prompts]
    rewards: [{name: math}, {name: format, weight: 0.1}]
    steps: 5
    prompts_per_step: 4
    grpo: {n: 4}
    sampling: {temperature: 1.0, max_tokens: 48}
    train: {micro_batch_size: 8, max_seq_len: 192, optim: {lr: 1.0e-4, schedule: constant}}
    checkpoint_every: 2
    async: {max_staleness: 1}   # the batch collected ahead is part of each checkpoint
  - name: rs
    kind: rejection_sampling
    model: {from: rl}
    data: [prompts]
    prompts: 16
    chunk_prompts: 4
    rewards: [{name: math}, {name: format}]
    n: 2
    sampling: {temperature: 1.0, max_tokens: 48}
    filters: {correct: [math]}
"""
# What differs between two runs of the same computation: clocks.
TIMING = {"time", "elapsed_s", "tokens_per_s", "generate_tokens_per_s", "train_tokens_per_s", "ref_seconds"}


def _start(pipeline: Path, run_dir: Path, ray_tmp: str) -> subprocess.Popen:
    log = (run_dir.parent / f"{run_dir.name}.log").open("a")
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(pipeline), "--run-dir", str(run_dir),
                             "--address", "local"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "RAY_TMPDIR": ray_tmp})


def _steps(path: Path) -> list[int]:
    try:
        return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError, KeyError):
        return []


def _kill_when(proc: subprocess.Popen, ray_tmp: str, ready, timeout: float = 600) -> None:
    """kill -9 the driver once ``ready()`` holds, then every process of its embedded Ray (as a lost node)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before the moment it was to be killed at"
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop_processes_under(ray_tmp, grace_s=0.5)


def _records(run_dir: Path, stage: str) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING and not k.endswith("_s")}
            for line in (run_dir / stage / "metrics.jsonl").read_text().splitlines()]


def test_a_killed_job_resumes_and_matches_the_uninterrupted_run(tmp_path):
    pipeline = tmp_path / "resume.yaml"
    pipeline.write_text(PIPELINE)
    ray_tmp = f"/tmp/rr{os.getpid()}"   # short: Ray's socket paths have a length limit
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    try:
        assert _start(pipeline, whole, ray_tmp + "a").wait(timeout=900) == 0

        proc = _start(pipeline, killed, ray_tmp + "b")
        _kill_when(proc, ray_tmp + "b", lambda: max(_steps(killed / "sft" / "metrics.jsonl"), default=0) >= 7)
        assert (killed / "sft" / "checkpoints" / "step-5" / "state.json").exists()

        proc = _start(pipeline, killed, ray_tmp + "b")
        _kill_when(proc, ray_tmp + "b", lambda: max(_steps(killed / "rl" / "metrics.jsonl"), default=0) >= 3)
        assert (killed / "rl" / "checkpoints" / "step-2" / "state.json").exists()

        proc = _start(pipeline, killed, ray_tmp + "b")
        _kill_when(proc, ray_tmp + "b", lambda: (killed / "rs" / "chunks" / "chunk-1.json").exists())

        assert _start(pipeline, killed, ray_tmp + "b").wait(timeout=900) == 0
    finally:
        for suffix in "ab":
            stop_processes_under(ray_tmp + suffix, grace_s=0.5)

    log = (tmp_path / "killed.log").read_text()
    for line in ("sft: resuming from step 5 of 12", "rl: resuming from step 2 of 5"):
        assert log.count(line) == 1, line
    # Killed once chunk 1 was on disk (chunk 2 may have finished before the kill landed): not generated again.
    [chunks_done] = [int(n) for n in re.findall(r"rs: resuming from chunk (\d+) of 4", log)]
    assert chunks_done in (2, 3)
    for stage, steps in (("sft", list(range(1, 13))), ("rl", list(range(1, 6))), ("rs", [0])):
        resumed, reference = _records(killed, stage), _records(whole, stage)
        assert [r["step"] for r in resumed] == steps            # every step once: nothing skipped, nothing twice
        assert resumed == reference, stage
    # The prompts after the resume continued the uninterrupted order (the digest of every step's prompts agrees
    # above), and training went on from the same weights: the RL losses are bitwise the same.
    assert len({r["prompts_digest"] for r in _records(killed, "rl")}) == 5
    summaries = [json.loads((run / "summary.json").read_text()) for run in (whole, killed)]
    assert [s["status"] for s in summaries] == ["succeeded", "succeeded"]
    for a, b in zip(*(s["stages"] for s in summaries)):
        assert a["eval"] == b["eval"] and a["metrics"].get("final_loss") == b["metrics"].get("final_loss")
    metrics = {s["name"]: s["metrics"] for s in summaries[1]["stages"]}
    assert metrics["sft"]["checkpoints"]["resumed_from_step"] == 5
    assert metrics["rl"]["checkpoints"]["resumed_from_step"] == 2
    assert metrics["rs"]["resumed_from_chunk"] == chunks_done
    assert metrics["rs"]["filter_report"] == {s["name"]: s["metrics"] for s in summaries[0]["stages"]}["rs"][
        "filter_report"]
    assert not (killed / "rl" / "checkpoints").exists()       # a finished stage keeps no resumable state

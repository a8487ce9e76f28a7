"""Stages take over the actors of the stage before them: the rl stage trains on the sft stage's trainer ranks and
samples from its rollout engine (built afresh), writes their output to its own logs and reports what it took."""

from __future__ import annotations

import json

from orchestrator.driver import run_pipeline
from orchestrator.yaml_errors import parse_pipeline

PIPELINE = """\
name: pool
cluster: {trainer: {workers: 1, cpus: 1}, rollout: {workers: 1, cpus: 1}, reward: {workers: 1, cpus: 0.5}}
rollout: {dtype: float32, max_model_len: 256, kv_cache_gib: 1}
datasets:
  sft: {synthetic: {split: sft, size: 64, digits: 1}}
  dev: {synthetic: {split: dev, size: 8, digits: 1}}
  prompts: {synthetic: {split: rl, size: 32, digits: 1}}
models:
  m: {path: MODEL}
stages:
  - name: sft
    kind: sft
    model: m
    data: [sft]
    train: {steps: 4, batch_size: 16, micro_batch_size: 8, max_seq_len: 192, optim: {lr: 1.0e-3}}
    early_stopping: {every_steps: 2, patience: 5, data: dev}
  - name: rl
    kind: rl
    model: {from: sft}
    data: [prompts]
    rewards: [{name: math}]
    steps: 2
    prompts_per_step: 4
    grpo: {n: 4}
    sampling: {temperature: 1.0, max_tokens: 32}
    train: {micro_batch_size: 8, max_seq_len: 192, optim: {lr: 1.0e-4, schedule: constant}}
"""


def test_the_rl_stage_takes_over_the_sft_stages_trainer_and_engine(ray_local, tiny_checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    summary = run_pipeline(parse_pipeline(PIPELINE.replace("MODEL", str(tiny_checkpoint))), run_dir)
    assert summary["status"] == "succeeded"
    sft, rl = (json.loads((run_dir / s / "status.json").read_text())["metrics"] for s in ("sft", "rl"))
    assert "actors_taken_over" not in sft and rl["actors_taken_over"] == ["trainer", "rollout"]
    # The taken-over actors write to the rl stage's log files from the hand-over on (DeepSpeed's and vLLM's
    # start-up lines of the rl stage's setup and load are there), and the rl stage trained from the sft result.
    for role in ("trainer", "rollout"):
        assert (run_dir / "rl" / "logs" / f"{role}-0.log").stat().st_size > 0, role
    records = [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["policy_version"] for r in records] == [1, 2] and all(r["rollout_logprob_diff"] < 1e-3 for r in records)

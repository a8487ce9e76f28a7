"""One small RL pipeline over a given checkpoint, for the tests that run an `rl` stage through the driver."""

from __future__ import annotations

from pathlib import Path

from orchestrator.yaml_errors import parse_pipeline

PIPELINE = """\
name: rl
cluster: {trainer: {workers: 1, cpus: 1}, rollout: {workers: 1, cpus: 1}, reward: {workers: 1, cpus: 0.5}}
rollout: {dtype: float32, max_model_len: 256, kv_cache_gib: 1}
datasets:
  prompts: {synthetic: {split: rl, size: 48, digits: 1}}
models:
  m: {path: MODEL}
stages:
  - name: rl
    kind: rl
    model: m
    data: [prompts]
    rewards: REWARDS
    steps: STEPS
    prompts_per_step: 4
    grpo: {n: 4}
    sampling: {temperature: 1.0, max_tokens: 32}
    train: {micro_batch_size: 8, max_seq_len: 192, optim: {lr: 1.0e-4, schedule: constant}}
    checkpoint_every: 2
    fault_tolerance: {max_restarts: RESTARTS}
    async: ASYNC
"""
MATH = "[{name: math}, {name: format, weight: 0.1}]"


def rl_pipeline(model: Path, steps: int = 6, restarts: int = 3, rewards: str = MATH, async_rl: str = "null"):
    """The stage `rl` on ``model``: 4 prompts x 4 samples a step, a checkpoint every 2 steps; ``rewards`` and
    ``async_rl`` are YAML flow values."""
    return parse_pipeline(PIPELINE.replace("MODEL", str(model)).replace("STEPS", str(steps))
                          .replace("RESTARTS", str(restarts)).replace("REWARDS", rewards).replace("ASYNC", async_rl))

"""The driver: a failing actor fails its stage loudly, with the stage's name and the actor's traceback."""

from __future__ import annotations

import json
import shutil

import pytest

from orchestrator.driver import StageFailed, run_pipeline, stage_fingerprints
from orchestrator.yaml_errors import parse_pipeline

PIPELINE = """\
name: broken
cluster: {trainer: {workers: 1, cpus: 1}, rollout: {workers: 1, cpus: 1}}
datasets:
  d: {synthetic: {split: sft, size: 16, digits: 1}}
models:
  m: {path: MODEL}
stages:
  - name: warmup
    kind: sft
    model: m
    data: [d]
    train: {steps: 1, batch_size: 4, micro_batch_size: 4}
"""


def test_actor_failure_names_the_stage_and_carries_the_traceback(ray_local, tiny_checkpoint, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    (model / "model.safetensors").write_bytes(b"not a safetensors file")  # the tokenizer still loads
    spec = parse_pipeline(PIPELINE.replace("MODEL", str(model)))
    run_dir = tmp_path / "run"
    with pytest.raises(StageFailed) as info:
        run_pipeline(spec, run_dir)
    message = str(info.value)
    assert message.startswith("Stage 'warmup' (sft) failed:")
    assert "PolicyTrainer.setup" in message and "SafetensorError" in message and "File " in message
    status = json.loads((run_dir / "warmup" / "status.json").read_text())
    assert status["status"] == "failed" and "PolicyTrainer.setup" in status["error"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stages"][0]["status"] == "failed"


def test_fingerprints_change_downstream_only(tiny_checkpoint):
    text = PIPELINE.replace("MODEL", str(tiny_checkpoint)) + """\
  - name: check
    kind: eval
    model: {from: warmup}
    eval: {data: d}
"""
    base = stage_fingerprints(parse_pipeline(text))
    changed_eval = stage_fingerprints(parse_pipeline(text.replace("eval: {data: d}", "eval: {data: d, n: 2}")))
    assert changed_eval["warmup"] == base["warmup"] and changed_eval["check"] != base["check"]
    changed_train = stage_fingerprints(parse_pipeline(text.replace("steps: 1", "steps: 2")))
    assert changed_train["warmup"] != base["warmup"] and changed_train["check"] != base["check"]

"""PolicyTrainer on one CUDA rank (NCCL, DeepSpeed, bf16 by default): SFT steps learn, GRPO steps run against a
reference on the GPU that refreshes every 2 steps, logprobs come back on the CPU, and the NCCL path's per-module
weight stream equals the whole state. Each configuration runs in a child process (tests/gpu/trainer_steps.py).
Needs CUDA and deepspeed; not yet run on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
pytest.importorskip("deepspeed", reason="the trainer runs on DeepSpeed")

SCRIPT = Path(__file__).with_name("trainer_steps.py")


@pytest.mark.parametrize("arch,zero_stage", [("qwen2", 2), ("v3", 3)])
def test_sft_and_rl_steps_on_cuda(arch, zero_stage, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), arch, str(zero_stage), str(tmp_path)], capture_output=True,
                          text=True, timeout=420, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-4000:] + proc.stderr[-6000:]
    r = json.loads(lines[-1][len("REPORT "):])
    print("\n", r)
    assert r["engine_device"].startswith("cuda") and r["reference_devices"] == [r["engine_device"]]
    assert r["param_dtypes"] == ["torch.bfloat16"]  # dtype auto on a GPU rank
    losses = r["sft_losses"]
    assert all(map(lambda v: v == v, losses)) and losses[-1] < 0.9 * losses[0], losses
    kl = r["rl_kl"]  # refreshed after step 2: steps 1 and 3 start at the reference
    assert abs(kl[0]) < 1e-3 and kl[1] > abs(kl[0]) and abs(kl[2]) < kl[1], kl
    assert all(g > 0 for g in r["rl_grad_norms"]) and r["good_logprob_moved"] > 0
    assert r["logprobs_device"] == "cpu"
    assert r["stream_matches_state"] and r["stream_device"] == [r["engine_device"]]

"""Asynchronous RL (``async: {max_staleness: k}``): the batch of the next steps is generated and scored while the
trainer trains, and each trained sample is exactly as many versions old as the schedule says, never more than k."""

from __future__ import annotations

import json

from orchestrator.driver import run_pipeline
from tests.ray.rl_pipeline import rl_pipeline


def test_async_steps_train_on_batches_exactly_as_stale_as_scheduled(ray_local, tiny_checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    summary = run_pipeline(rl_pipeline(tiny_checkpoint, steps=5, async_rl="{max_staleness: 2}"), run_dir)
    assert summary["status"] == "succeeded"
    records = [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["policy_version"] for r in records] == [1, 2, 3, 4, 5]
    # Step 1 trains what the starting weights generated; steps 2 and 3 the two batches collected meanwhile (both
    # by version 0); from then on one batch per step, collected by the weights two versions back.
    assert [r["policy_version_lag"] for r in records] == [0, 1, 2, 2, 2]
    assert all(r["policy_version_lag_max"] == r["policy_version_lag"] for r in records)
    # The off-policy samples are reweighted against the engine's logprobs (logprobs_source: rollout is implied).
    assert all(0 < r["tis_weight_mean"] <= 2.0 for r in records)
    # Steps 1-3 collected the batches ahead while training (steps 4 and 5 had nothing left to collect).
    assert all(r["overlap_s"] > 0 for r in records[:3]) and all(r["overlap_s"] == 0 for r in records[3:])
    assert all(r["generate_s"] == 0 for r in records[3:]) and records[0]["generate_s"] > 0
    assert len({r["prompts_digest"] for r in records}) == 5   # five different batches, none trained twice

"""The reward_model plugin inside a RewardWorker Ray actor, next to the instruction reward on general rows."""

from __future__ import annotations

import pytest

from actors.reward import RewardWorker
from orchestrator.data.general import make_general_split
from rewards.reward_model import RewardModelReward
from tests.tiny_reward_model import build_tiny_reward_model


def test_reward_model_in_a_reward_worker_actor(ray_local, tmp_path) -> None:
    ray = ray_local
    path = str(build_tiny_reward_model(tmp_path / "rm"))
    specs = [{"name": "instruction", "domains": ["general"]},
             {"name": "reward_model", "domains": ["general"], "weight": 0.5, "args": {"path": path}}]
    rows = make_general_split("sft", 6, seed=2)
    completions = [r["response"] for r in rows[:5]] + ["<think>no end"]
    worker = ray.remote(num_cpus=1)(RewardWorker).remote(specs, num_procs=1, deadline_s=30.0)
    try:
        result = ray.get(worker.score.remote(completions, rows), timeout=300)
    finally:
        ray.get(worker.close.remote())
        ray.kill(worker)
    direct = RewardModelReward(path).batch(completions, rows)
    for i in range(5):
        assert result.components[i]["instruction"] == 1.0
        assert result.components[i]["reward_model"] == pytest.approx(direct[i].score, abs=1e-5)
        assert result.scores[i] == pytest.approx(1.0 + 0.5 * direct[i].score, abs=1e-5)
        assert 0.0 < direct[i].score < 1.0
    assert result.components[5] == {"instruction": 0.0, "reward_model": 0.0}
    assert result.details[5]["reward_model"]["error"] == "no_answer"
    # No answer is the completion's zero, not a reward that failed to grade: not counted as an error.
    assert result.errors == 0 and result.timeouts == 0


def test_a_bad_reward_model_path_fails_the_worker_at_start(ray_local, tmp_path) -> None:
    ray = ray_local
    specs = [{"name": "reward_model", "args": {"path": str(tmp_path / "nowhere")}}]
    worker = ray.remote(num_cpus=1)(RewardWorker).remote(specs, num_procs=1)
    with pytest.raises(ray.exceptions.RayActorError, match="no Hugging Face checkpoint at path"):
        ray.get(worker.components.remote(), timeout=120)

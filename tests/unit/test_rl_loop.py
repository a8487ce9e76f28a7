"""The RL loop's training step without Ray: a stand-in trainer group records what it is asked to do."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from actors.types import Rollout, StepMetrics
from orchestrator.config import RLStage
from orchestrator.stages.rl import GRPOLoop
from orchestrator.stages.rl_step import Group, StepBatch


class RecordingTrainers:
    """Answers ``logprobs`` with zeros of the right shape and ``rl_step`` with a metrics record."""

    def __init__(self):
        self.actors = [object()]
        self.calls: list[str] = []

    def call_each(self, method: str, args: list[tuple]):
        self.calls.append(method)
        batch = args[0][0]
        if method == "logprobs":
            return [[torch.zeros(mb.loss_mask.shape) for mb in batch.micro_batches]]
        return [StepMetrics(step=len(self.calls), loss=0.0, grad_norm=0.0, lr=1e-4, tokens=1, seconds=0.0)]


def _group(rewards: list[float], prompt: int) -> Group:
    rollouts = [Rollout(prompt_index=prompt, prompt_ids=[1, 2, 3], response_ids=[4, 5, 6 + i], text="x",
                        response_logprobs=[-1.0, -1.0, -1.0], finish_reason="stop", policy_version=0)
                for i in range(len(rewards))]
    return Group({"prompt": "p"}, [1, 2, 3], rollouts, rewards, [{"math": r} for r in rewards])


def _loop(mini_batches: int) -> tuple[GRPOLoop, RecordingTrainers]:
    stage = RLStage.model_validate({
        "kind": "rl", "name": "rl", "model": "m", "data": ["d"], "rewards": [{"name": "math"}], "steps": 2,
        "prompts_per_step": 4, "grpo": {"n": 2, "mini_batches": mini_batches, "dynamic_sampling": True},
        "train": {"micro_batch_size": 8}})
    loop = GRPOLoop.__new__(GRPOLoop)
    trainers = RecordingTrainers()
    loop.stage, loop.spec, loop.version = stage, stage.grpo, 0
    loop.ctx = SimpleNamespace(groups={"trainer": trainers})
    loop.tokenizer = SimpleNamespace(pad_token_id=0)
    return loop, trainers


def test_fewer_contrastive_groups_than_mini_batches_train_one_group_per_step():
    """Dynamic sampling may stop at its refill cap with one group with contrast; two mini-batches were asked."""
    loop, trainers = _loop(mini_batches=2)
    batch = StepBatch(groups=[_group([1.0, 0.0], 0)])
    results = loop._train(batch, step=1)
    assert len(results) == 1 and loop.version == 1
    assert trainers.calls == ["logprobs", "rl_step"]


def test_each_mini_batch_is_one_optimizer_step():
    loop, trainers = _loop(mini_batches=2)
    batch = StepBatch(groups=[_group([1.0, 0.0], 0), _group([0.0, 1.0], 1), _group([1.0, 1.0], 2)])
    results = loop._train(batch, step=1)
    assert len(results) == 2 and loop.version == 2
    assert trainers.calls == ["logprobs", "rl_step", "rl_step"]

"""PolicyTrainer.rl_step under DeepSpeed on local Ray: the GRPO update moves probability the way the advantages
say, is the same update whatever the number of data-parallel ranks, and computes KL against a frozen reference."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from orchestrator.algorithms.grpo import GRPOSpec
from orchestrator.algorithms.packing import TrainSequence, shard, unshard
from orchestrator.cluster import spawn_trainers
from orchestrator.config import ClusterSpec, RoleResources, TrainerSpec
from orchestrator.data.chat import encode_prompt


def _cluster(ranks: int) -> ClusterSpec:
    return ClusterSpec(trainer=RoleResources(workers=ranks, cpus=1, threads=1))


def _sequences(tok, rows) -> list[TrainSequence]:
    """Two completions per prompt (its worked solution and a wrong one), with opposite advantages."""
    seqs = []
    for row in rows:
        prompt = encode_prompt(tok, row)
        good = tok(row["response"], add_special_tokens=False)["input_ids"]
        bad = tok("<think>\nno idea\n</think>\n<answer>12345</answer>", add_special_tokens=False)["input_ids"]
        seqs += [TrainSequence(prompt + good, len(prompt), 1.0), TrainSequence(prompt + bad, len(prompt), -1.0)]
    return seqs


def _trainers(path, ranks: int, grpo: GRPOSpec, lr: float = 1e-3, zero_stage: int = 2):
    train = TrainerSpec(micro_batch_size=2, zero_stage=zero_stage,
                        optim={"lr": lr, "schedule": "constant", "grad_clip": None})
    group = spawn_trainers(_cluster(ranks).trainer, _cluster(ranks))
    group.call("setup", train.settings(str(path), total_steps=10, grad_accum=1, fp8=False,
                                       loss=grpo.loss_settings(temperature=1.0)))
    return group


def _seq_logprobs(group, seqs, grpo) -> list[float]:
    batches = shard(seqs, len(group.actors), 2, 0, grpo.loss_agg)
    rows = unshard(batches, group.call_each("logprobs", [(b,) for b in batches]), seqs)
    return [float(r[s.response_start - 1:].sum()) for s, r in zip(seqs, rows)]


def _step(group, seqs, grpo, **kw):
    batches = shard(seqs, len(group.actors), 2, 0, grpo.loss_agg, **kw)
    return group.call_each("rl_step", [(b,) for b in batches])[0]


def test_rl_step_raises_good_completions_and_lowers_bad_ones(ray_local, tiny_checkpoint, sft_rows):
    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    seqs = _sequences(tok, sft_rows[:3])
    grpo = GRPOSpec(n=2)
    group = _trainers(tiny_checkpoint, 1, grpo)
    try:
        before = _seq_logprobs(group, seqs, grpo)
        metrics = _step(group, seqs, grpo)
        after = _seq_logprobs(group, seqs, grpo)
    finally:
        group.shutdown()
    assert metrics.step == 1 and metrics.grad_norm > 0
    assert metrics.extra["clip_frac"] == 0.0 and abs(metrics.extra["ratio_mean"] - 1.0) < 1e-6  # on-policy
    assert metrics.extra["entropy"] > 0 and metrics.extra["tokens_global"] == sum(sum(s.target_mask()) for s in seqs)
    for i, s in enumerate(seqs):
        moved = after[i] - before[i]
        assert (moved > 0) if s.advantage > 0 else (moved < 0), (i, before[i], after[i])


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean"])
def test_two_ranks_take_the_same_step_as_one(ray_local, tiny_checkpoint, sft_rows, agg):
    """The global normaliser makes the update independent of how sequences are spread over ranks."""
    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    seqs = _sequences(tok, sft_rows[3:6])[:5]  # an odd count: one rank gets a filler micro-batch
    grpo = GRPOSpec(n=2, loss_agg=agg)
    checksums, losses = [], []
    for ranks in (1, 2):
        group = _trainers(tiny_checkpoint, ranks, grpo, lr=1e-2)
        try:
            start = group.call("parameter_checksum")[0]
            losses.append(_step(group, seqs, grpo).loss)
            checksums.append(group.call("parameter_checksum")[0] - start)
        finally:
            group.shutdown()
    assert abs(checksums[0]) > 1e-3, "the step did not move the weights"
    assert checksums[1] == pytest.approx(checksums[0], rel=1e-4)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-7)


def test_kl_to_the_reference_and_several_mini_batches(ray_local, tiny_v3, sft_rows):
    """Our V3 under ZeRO-3: KL starts at 0 (policy = reference) and grows; old logprobs from before the first
    mini-batch make the second one off-policy (ratio != 1), as PPO-style reuse should."""
    tok = AutoTokenizer.from_pretrained(str(tiny_v3))
    seqs = _sequences(tok, sft_rows[6:8])
    grpo = GRPOSpec(n=2, kl_coef=0.1, kl_estimator="k3", mini_batches=2)
    group = _trainers(tiny_v3, 1, grpo, lr=3e-3, zero_stage=3)
    try:
        for s, old in zip(seqs, unshard(b := shard(seqs, 1, 2, 0, grpo.loss_agg),
                                        group.call_each("logprobs", [(x,) for x in b]), seqs)):
            s.old_logprobs = old
        first = _step(group, seqs[:2], grpo, with_old=True)
        second = _step(group, seqs[2:], grpo, with_old=True)
        third = _step(group, seqs, grpo)
    finally:
        group.shutdown()
    assert first.extra["kl"] == pytest.approx(0.0, abs=1e-9) and abs(first.extra["ratio_mean"] - 1) < 1e-6
    assert abs(second.extra["ratio_mean"] - 1.0) > 1e-5  # trained by the first mini-batch meanwhile
    assert third.extra["kl"] > 0 and third.extra["ref_seconds"] > 0
    assert any(k.startswith("moe/") for k in third.extra)  # V3 expert loads reported and balanced
    assert torch.isfinite(torch.tensor([first.loss, second.loss, third.loss])).all()

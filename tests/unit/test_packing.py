"""Rollouts → trainer micro-batches (orchestrator/algorithms/packing.py) and the RL stage's prompt sampler."""

from __future__ import annotations

import pytest
import torch

from actors.losses import aggregate, loss_normaliser
from orchestrator.algorithms.packing import TrainSequence, micro_batch, shard, unshard
from orchestrator.config import ClusterSpec, RLStage
from orchestrator.stages.rl import choose_weight_sync
from orchestrator.stages.rl_step import PromptSampler

PAD = 0


def _seq(prompt: int, response: int, adv: float = 1.0, trained: bool = True, base: int = 10) -> TrainSequence:
    ids = list(range(base, base + prompt + response))
    return TrainSequence(ids, prompt, adv, trained, rollout_logprobs=[-0.5 - i for i in range(response)])


def test_target_mask_marks_exactly_the_response_predictions():
    s = _seq(prompt=3, response=2)  # ids: p p p r r -> targets: p p r r (positions 0..3)
    assert s.target_mask() == [False, False, True, True]
    assert _seq(3, 2, trained=False).target_mask() == [False] * 4


def test_micro_batch_pads_right_and_places_rollout_logprobs_on_the_response():
    mb = micro_batch([_seq(3, 2), _seq(2, 4)], PAD, with_old=False, with_rollout=True)
    assert mb.input_ids.shape == (2, 6) and mb.loss_mask.shape == (2, 5)
    assert mb.input_ids[0, 5] == PAD and mb.loss_mask[0].tolist() == [False, False, True, True, False]
    assert mb.loss_mask[1].tolist() == [False, True, True, True, True]
    # Response token k's logprob sits at target column response_start - 1 + k.
    assert mb.rollout_logprobs[0].tolist() == [0.0, 0.0, -0.5, -1.5, 0.0]
    assert mb.rollout_logprobs[1].tolist() == [0.0, -0.5, -1.5, -2.5, -3.5]
    assert mb.advantages.dtype == torch.float32


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"])
def test_sharded_losses_add_up_to_the_unsharded_aggregate(agg):
    """Whatever the rank count and micro-batch size, summing every micro-batch's loss (each divided by the
    global normaliser) gives the aggregate over the whole step: the invariant the trainer relies on."""
    seqs = [_seq(2 + i % 3, 1 + (i * 7) % 5, adv=i - 4.0, trained=i != 3, base=i) for i in range(9)]
    values = {id(s): torch.rand(len(s.ids) - 1) for s in seqs}

    def per_token(mb, index):
        out = torch.zeros(mb.loss_mask.shape)
        for row, i in enumerate(index):
            if i >= 0:
                out[row, : len(seqs[i].ids) - 1] = values[id(seqs[i])]
        return out

    whole = micro_batch(seqs, PAD, False, False)
    expected = aggregate(per_token(whole, list(range(9))), whole.loss_mask, agg)
    for world, micro in [(1, 4), (2, 2), (3, 1), (4, 8)]:
        batches = shard(seqs, world, micro, PAD, agg)
        assert len({len(b.micro_batches) for b in batches}) == 1, "ranks must run equal micro-batch counts"
        assert all(b.normaliser == loss_normaliser(whole.loss_mask, agg) for b in batches)
        total = sum(aggregate(per_token(mb, idx), mb.loss_mask, agg, b.normaliser)
                    for b in batches for mb, idx in zip(b.micro_batches, b.sequence_index))
        torch.testing.assert_close(total, expected)
        covered = sorted(i for b in batches for idx in b.sequence_index for i in idx if i >= 0)
        assert covered == list(range(9))


def test_filler_micro_batches_train_nothing():
    batches = shard([_seq(3, 2), _seq(3, 2), _seq(3, 2)], world=2, micro_batch_size=2, pad_id=PAD, agg="token_mean")
    counts = [len(b.micro_batches) for b in batches]
    assert counts == [1, 1]
    batches = shard([_seq(3, 2)] * 3, world=4, micro_batch_size=1, pad_id=PAD, agg="token_mean")
    filler = batches[3].micro_batches[0]
    assert batches[3].sequence_index == [[-1]] and not filler.loss_mask.any()


def test_unshard_returns_each_sequence_its_own_row():
    seqs = [_seq(2, 1 + i, base=i) for i in range(5)]
    batches = shard(seqs, 2, 2, PAD, "token_mean")
    per_rank = [[mb.input_ids[:, 1:].float() for mb in b.micro_batches] for b in batches]
    rows = unshard(batches, per_rank, seqs)
    for s, row in zip(seqs, rows):
        assert row.tolist() == [float(t) for t in s.ids[1:]]


def test_prompt_sampler_covers_every_prompt_before_repeating_and_is_seeded():
    rows = [{"id": i} for i in range(10)]
    a = PromptSampler(rows, seed=1)
    first = [r["id"] for r in a.take(10)]
    assert sorted(first) == list(range(10))
    second = [r["id"] for r in a.take(10)]
    assert sorted(second) == list(range(10)) and second != first and a.state() == {"epoch": 1, "pos": 10}
    assert [r["id"] for r in PromptSampler(rows, seed=1).take(10)] == first
    assert [r["id"] for r in PromptSampler(rows, seed=2).take(10)] != first


def test_in_memory_sync_is_chosen_only_where_it_is_exact():
    stage = RLStage.model_validate({"kind": "rl", "name": "rl", "model": "m", "data": ["d"],
                                    "rewards": [{"name": "math"}], "steps": 1})
    # Tied embeddings sync in place too: the receiver re-ties and repacks the head (actors/weight_sync.py).
    cases = [({"model_type": "qwen2"}, True), ({"model_type": "qwen2", "tie_word_embeddings": True}, True),
             ({"model_type": "deepseek_v3", "n_routed_experts": 8, "moe_intermediate_size": 64}, True),
             ({"model_type": "deepseek_v3", "n_routed_experts": 8, "moe_intermediate_size": 48}, False)]
    for config, expected in cases:
        in_memory = choose_weight_sync(stage, ClusterSpec(), config, nccl_importable=lambda: False) == "object_store"
        assert in_memory is expected, config

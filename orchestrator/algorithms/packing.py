"""Scored rollouts → the tensors the PolicyTrainer ranks train on.

Shape legend: B sequences of one micro-batch, L padded sequence length (prompt + response); per-token tensors
are target-aligned with L - 1 columns (column t is the prediction of token t + 1), as in ``actors.types``.

A mini-batch (one optimizer step) is dealt to the data-parallel ranks sequence by sequence, longest first, so
ranks see similar token counts; each rank cuts its share into micro-batches of at most ``micro_batch_size``
sequences of similar length (less padding). Every rank gets the same number of micro-batches, an empty filler
one where needed, because under ZeRO-3 every forward pass is a collective that all ranks must join.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from actors.losses import loss_normaliser
from actors.types import LossAgg, RLBatch, RLMicroBatch


@dataclass(slots=True)
class TrainSequence:
    """One sampled completion, ready to train on."""

    ids: list[int]
    """Prompt tokens then response tokens."""
    response_start: int
    """Index in ``ids`` of the first response token (the prompt's length)."""
    advantage: float
    trained: bool = True
    """False: no token of it is trained (a truncated completion under ``mask_truncated``); it still counts in
    its group's advantage statistics, which were computed before."""
    rollout_logprobs: list[float] | None = None
    """The engine's logprob of each response token."""
    old_logprobs: Tensor | None = None
    """[len(ids) - 1] target-aligned trainer logprobs before the first update of this batch (when needed)."""

    def target_mask(self) -> list[bool]:
        width = len(self.ids) - 1
        return [self.trained and t >= self.response_start - 1 for t in range(width)]


def _pad(rows: list[list], width: int, value) -> list[list]:
    return [r + [value] * (width - len(r)) for r in rows]


def micro_batch(seqs: list[TrainSequence], pad_id: int, with_old: bool, with_rollout: bool) -> RLMicroBatch:
    """Right-pad ``seqs`` into one micro-batch."""
    if not seqs:  # filler for a rank with nothing left: one masked-out token pair
        empty = torch.zeros(1, 1)
        return RLMicroBatch(torch.full((1, 2), pad_id, dtype=torch.long), torch.zeros(1, 1, dtype=torch.bool),
                            torch.zeros(1), empty if with_old else None, empty if with_rollout else None)
    width = max(len(s.ids) for s in seqs)
    ids = torch.tensor(_pad([s.ids for s in seqs], width, pad_id), dtype=torch.long)
    mask = torch.tensor(_pad([s.target_mask() for s in seqs], width - 1, False), dtype=torch.bool)
    advantages = torch.tensor([s.advantage for s in seqs], dtype=torch.float32)
    old = rollout = None
    if with_old:
        old = torch.zeros(len(seqs), width - 1)
        for i, s in enumerate(seqs):
            old[i, : len(s.old_logprobs)] = s.old_logprobs
    if with_rollout:
        rollout = torch.zeros(len(seqs), width - 1)
        for i, s in enumerate(seqs):
            start = s.response_start - 1
            rollout[i, start: start + len(s.rollout_logprobs)] = torch.tensor(s.rollout_logprobs)
    return RLMicroBatch(ids, mask, advantages, old, rollout)


def shard(seqs: list[TrainSequence], world: int, micro_batch_size: int, pad_id: int, agg: LossAgg,
          with_old: bool = False, with_rollout: bool = False) -> list[RLBatch]:
    """One optimizer step's sequences → one ``RLBatch`` per rank (see the module docstring)."""
    if not seqs:
        raise ValueError("Cannot build a training step from zero sequences.")
    normaliser = sum(loss_normaliser(torch.tensor([s.target_mask()]), agg) for s in seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].ids))
    per_rank = [order[r::world] for r in range(world)]
    chunks = [[idx[i:i + micro_batch_size] for i in range(0, len(idx), micro_batch_size)] for idx in per_rank]
    count = max(1, max(len(c) for c in chunks))
    batches = []
    for rank_chunks in chunks:
        rank_chunks = rank_chunks + [[] for _ in range(count - len(rank_chunks))]
        micro = [micro_batch([seqs[i] for i in c], pad_id, with_old, with_rollout) for c in rank_chunks]
        index = [list(c) if c else [-1] for c in rank_chunks]
        batches.append(RLBatch(micro, float(max(normaliser, 1)), index))
    return batches


def unshard(batches: list[RLBatch], per_rank: list[list[Tensor]], seqs: list[TrainSequence]) -> list[Tensor]:
    """Per-sequence [len(ids) - 1] rows from per-rank, per-micro-batch [B, L-1] results of a scoring pass."""
    out: list[Tensor | None] = [None] * len(seqs)
    for batch, results in zip(batches, per_rank, strict=True):
        for index, values in zip(batch.sequence_index, results, strict=True):
            for row, i in enumerate(index):
                if i >= 0:
                    out[i] = values[row, : len(seqs[i].ids) - 1].clone()
    missing = [i for i, v in enumerate(out) if v is None]
    if missing:
        raise RuntimeError(f"The scoring pass returned nothing for sequences {missing[:5]}.")
    return out

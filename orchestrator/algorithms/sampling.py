"""Shaping a rollout batch for GRPO training: DAPO's dynamic sampling and overlong filtering, and mini-batches.

Shape legend: N samples in the rollout batch, G groups (prompts), T response tokens.

Dynamic sampling (DAPO, Yu et al. 2025). A group whose rewards are all equal (all solved, all failed) has zero
advantage everywhere and adds nothing but dilution to the loss. ``filter_groups`` drops such groups; the
driver then draws more prompts until the batch holds its target number of groups again, at most
``max_refill_rounds`` extra rounds (``refill`` says how many to draw), and ``select_groups`` trims an overfull
batch. If the cap is reached first, the step trains on the groups it has (a smaller batch beats a stalled run).

Overlong filtering (DAPO). A completion cut off by max_tokens is not wrong, only unfinished; punishing its
tokens teaches the model that reasoning at length is bad. ``mask_truncated`` removes such completions from the
loss mask. They keep their place in their group's reward statistics (advantages are computed before).

Mini-batches. ``split_minibatches`` deals a rollout batch into optimizer steps, whole groups together by
default: GRPO advantages sum to zero within a group, so a step that sees all of a prompt's samples pushes its
good completions up and its bad ones down together; a step holding only a prompt's failures would push down
the prompt's shared, often correct, opening tokens with nothing pulling them back until a later step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from orchestrator.algorithms.grpo import constant_groups, group_index


def filter_groups(rewards: Tensor, groups: Tensor | int) -> Tensor:
    """keep [N] bool: False for every sample of a group whose rewards are all equal (or that has one sample)."""
    index, num_groups = group_index(groups, rewards.numel())
    return ~constant_groups(rewards.double(), index.to(rewards.device), num_groups)


def select_groups(keep: Tensor, groups: Tensor, max_groups: int) -> Tensor:
    """keep [N] narrowed to the first ``max_groups`` kept groups, in order of first appearance: deterministic,
    and the earliest-drawn prompts are used first."""
    kept_ids = list(dict.fromkeys(groups[keep].tolist()))  # unique, in order of first appearance
    chosen = torch.tensor(kept_ids[:max_groups], dtype=groups.dtype, device=groups.device)
    return keep & torch.isin(groups, chosen)


@dataclass(slots=True)
class Refill:
    """What the driver does next while filling one batch with dynamic sampling."""

    draw: int
    """Prompts to sample in the next round; 0 means stop."""
    exhausted: bool
    """True when the round cap stopped refilling before the batch was full (train on what there is)."""


def refill(kept_groups: int, target_groups: int, drawn_prompts: int, rounds_done: int, max_rounds: int) -> Refill:
    """How many more prompts to draw: the missing groups divided by the keep rate seen so far, at most one
    normal batch (``target_groups``) per round, none after ``max_rounds`` refill rounds.

    kept_groups: groups with contrast so far; drawn_prompts: prompts sampled so far for this batch (all rounds);
    rounds_done: refill rounds already run (the first draw is not one).
    """
    if target_groups < 1:
        raise ValueError(f"The target number of groups must be at least 1, not {target_groups}.")
    missing = target_groups - kept_groups
    if missing <= 0:
        return Refill(draw=0, exhausted=False)
    if rounds_done >= max_rounds:
        return Refill(draw=0, exhausted=True)
    # With no kept group yet there is no rate to trust: draw a whole batch again.
    draw = math.ceil(missing * drawn_prompts / kept_groups) if kept_groups > 0 else target_groups
    return Refill(draw=min(draw, target_groups), exhausted=False)


def mask_truncated(loss_mask: Tensor, finish_reasons: list[str]) -> Tensor:
    """loss_mask [N, T] with the rows of completions whose finish reason is "length" (cut off) set to False."""
    if len(finish_reasons) != loss_mask.shape[0]:
        raise ValueError(f"Got {len(finish_reasons)} finish reasons for {loss_mask.shape[0]} sequences; "
                         "give one per sequence.")
    finished = torch.tensor([r != "length" for r in finish_reasons], device=loss_mask.device).unsqueeze(-1)
    if loss_mask.dtype == torch.bool:
        return loss_mask & finished
    return loss_mask * finished.to(loss_mask.dtype)


def split_minibatches(groups: Tensor, mini_batches: int, seed: int, keep_groups: bool = True) -> list[Tensor]:
    """Deal the N samples into ``mini_batches`` index tensors (sorted), shuffled by ``seed``.

    groups: group id per sample [N]. keep_groups: whole groups stay in one mini-batch (sizes then differ by at
    most one group); otherwise samples are dealt one by one (sizes differ by at most one sample).
    """
    n = groups.numel()
    index, num_groups = group_index(groups, n)
    units = num_groups if keep_groups else n
    if not 1 <= mini_batches <= units:
        what = "groups" if keep_groups else "samples"
        raise ValueError(f"Cannot split {units} {what} into {mini_batches} mini-batches; "
                         f"use between 1 and {units} mini_batches.")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(units, generator=generator)
    parts = order.tensor_split(mini_batches)
    if not keep_groups:
        return [part.sort().values for part in parts]
    return [torch.isin(index, part.to(index.device)).nonzero().squeeze(-1) for part in parts]

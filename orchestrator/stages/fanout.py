"""Work split over an actor group and gathered back in order: generation over rollout workers, scoring over
reward workers. Every stage that samples (eval, rl, rejection_sampling) goes through these two calls. And the
one check gathered from every trainer rank: that data-parallel ranks (on any nodes) still hold the same weights."""

from __future__ import annotations

from collections import defaultdict

from actors.reward import RewardScores
from actors.types import Rollout, SamplingParams
from orchestrator.cluster import ActorGroup


def even_bounds(n: int, parts: int) -> list[int]:
    """Cut points splitting n items into ``parts`` contiguous runs whose sizes differ by at most one."""
    return [n * i // parts for i in range(parts + 1)]


def ranks_agree(trainers: ActorGroup) -> list[float]:
    """Every trainer rank's parameter checksum; raises if the ranks no longer hold the same weights.

    Exact equality, not a tolerance: data-parallel ranks apply the same all-reduced gradients with the same
    optimizer, so their weights are bit-identical; any difference means a rank trained on something else."""
    sums = trainers.call("parameter_checksum")
    if len(set(sums)) > 1:
        raise RuntimeError(f"The trainer ranks hold different weights (parameter sums {sums}): data-parallel "
                           "training diverged. A rank that missed a collective or loaded another checkpoint "
                           "does this; the stage's actor logs say which.")
    return sums


def generate_sharded(rollout: ActorGroup, prompts: list[list[int]], sampling: SamplingParams) -> list[Rollout]:
    """Split prompts evenly over the rollout workers; results come back in prompt order."""
    k = len(rollout.actors)
    bounds = even_bounds(len(prompts), k)
    parts = rollout.call_each("generate", [(prompts[bounds[i]:bounds[i + 1]], sampling) for i in range(k)])
    out: list[Rollout] = []
    for i, part in enumerate(parts):
        for r in part:
            r.prompt_index += bounds[i]
            out.append(r)
    return out


def by_prompt(rollouts: list[Rollout]) -> dict[int, list[Rollout]]:
    """Rollouts grouped by the index of the prompt that produced them."""
    groups: dict[int, list[Rollout]] = defaultdict(list)
    for r in rollouts:
        groups[r.prompt_index].append(r)
    return groups


def score_sharded(rewards: ActorGroup, completions: list[str], samples: list[dict]) -> RewardScores:
    """Split a batch evenly over the reward workers; scores come back in order."""
    workers = len(rewards.actors)
    bounds = even_bounds(len(samples), workers)
    parts = rewards.call_each("score", [(completions[bounds[i]:bounds[i + 1]], samples[bounds[i]:bounds[i + 1]])
                                        for i in range(workers)])
    merged = RewardScores()
    for p in parts:
        merged.scores += p.scores
        merged.components += p.components
        merged.details += p.details
        merged.errors += p.errors
        merged.timeouts += p.timeouts
    return merged

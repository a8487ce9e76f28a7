"""Work split over an actor group and gathered back in order: generation over rollout workers, scoring over
reward workers. Every stage that samples (eval, rl, rejection_sampling) goes through these two calls. And the
one check gathered from every trainer rank: that data-parallel ranks (on any nodes) still hold the same weights."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

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


def generate_and_score(rollout: ActorGroup, rewards: ActorGroup, prompts: list[list[int]], sampling: SamplingParams,
                       to_score: Callable[[list[Rollout]], tuple[list[str], list[dict]]],
                       seconds: dict[str, float]) -> tuple[list[Rollout], RewardScores]:
    """``generate_sharded`` then ``score_sharded``, streamed: each rollout worker's part goes to the reward workers
    as soon as it is back, so scoring overlaps the parts still generating. ``to_score(part)`` gives the part's
    completions and sample rows (in the part's order). Rollouts and scores come back in prompt order.

    ``seconds`` gains "generate" (until the last part is back) and "reward" (the scoring still left after it)."""
    t0 = time.perf_counter()
    k = len(rollout.actors)
    bounds = even_bounds(len(prompts), k)
    refs = [a.generate.remote(prompts[bounds[i]:bounds[i + 1]], sampling) for i, a in enumerate(rollout.actors)]
    parts: list[list[Rollout]] = [[] for _ in range(k)]
    scoring: list[tuple[list, list[int]]] = [([], []) for _ in range(k)]   # per part: its calls and their workers
    for i, part in rollout.as_completed(refs, list(range(k))):
        for r in part:
            r.prompt_index += bounds[i]
        parts[i] = part
        completions, samples = to_score(part)
        cuts = even_bounds(len(samples), len(rewards.actors))
        for w, actor in enumerate(rewards.actors):
            if cuts[w] < cuts[w + 1]:
                scoring[i][0].append(actor.score.remote(completions[cuts[w]:cuts[w + 1]], samples[cuts[w]:cuts[w + 1]]))
                scoring[i][1].append(w)
    t1 = time.perf_counter()
    seconds["generate"] += t1 - t0
    merged = RewardScores()
    for calls, workers in scoring:
        for p in rewards.gather(calls, workers):
            merged.extend(p)
    seconds["reward"] += time.perf_counter() - t1
    return [r for part in parts for r in part], merged


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
        merged.extend(p)
    return merged

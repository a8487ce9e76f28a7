"""Held-out evaluation on rollout workers: pass@1, cons@n, mean response length, per-domain breakdown.

Also the ``eval`` stage kind, which evaluates any model (a path or an earlier stage's checkpoint).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

from actors.types import Rollout, SamplingSpec
from orchestrator.cluster import ActorGroup, spawn_rollout
from orchestrator.config import EvalSpec, EvalStage
from orchestrator.data.chat import encode_prompt
from orchestrator.stages.context import StageContext, StageResult
from rewards.math_extract import extract_answer
from rewards.registry import get_reward

log = logging.getLogger(__name__)


def even_bounds(n: int, parts: int) -> list[int]:
    """Cut points splitting n items into ``parts`` contiguous runs whose sizes differ by at most one."""
    return [n * i // parts for i in range(parts + 1)]


def generate_sharded(rollout: ActorGroup, prompts: list[list[int]], sampling: SamplingSpec) -> list[Rollout]:
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


def evaluate(rollout: ActorGroup, tokenizer, rows: list[dict], spec: EvalSpec | None = None, *,
             max_tokens: int = 256, temperature: float = 0.0, n: int = 1, seed: int = 0) -> dict:
    """Generate on ``rows`` with the model the workers serve now and score every sample.

    Samples are graded by the ``math`` reward (sympy equivalence against the row's ``answer``). pass@1 is the
    mean correctness over all samples (greedy when temperature is 0); cons@n is majority-vote correctness over
    each prompt's n samples (only when n > 1).
    """
    if spec is not None:
        max_tokens, temperature, n = spec.max_tokens, spec.temperature, spec.n
        rows = rows[: spec.limit] if spec.limit else rows
    prompts = [encode_prompt(tokenizer, r) for r in rows]
    sampling = SamplingSpec(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed, logprobs=False,
                            stop_token_ids=[tokenizer.eos_token_id])
    rollouts = generate_sharded(rollout, prompts, sampling)
    math = get_reward("math")
    by_prompt: dict[int, list[Rollout]] = defaultdict(list)
    for r in rollouts:
        by_prompt[r.prompt_index].append(r)
    correct, lengths, votes_correct, truncated = [], [], [], 0
    per_domain: dict[str, list[float]] = defaultdict(list)
    for i, row in enumerate(rows):
        samples = by_prompt[i]
        scores = [math(s.text, row).score for s in samples]
        correct += scores
        lengths += [len(s.response_ids) for s in samples]
        truncated += sum(s.finish_reason == "length" for s in samples)
        per_domain[row.get("domain", "general")] += scores
        if n > 1:
            answers = [a for a in (extract_answer(s.text).answer for s in samples) if a is not None]
            top = Counter(answers).most_common(1)
            votes_correct.append(float(bool(top) and math(f"<answer>{top[0][0]}</answer>", row).score == 1.0))
    result = {
        "pass@1": _mean(correct),
        "mean_response_tokens": _mean(lengths),
        "truncated_fraction": truncated / max(1, len(rollouts)),
        "problems": len(rows),
        "samples_per_problem": n,
    }
    if n > 1:
        result[f"cons@{n}"] = _mean(votes_correct)
    if len(per_domain) > 1:
        result["per_domain"] = {d: {"pass@1": _mean(v), "samples": len(v)} for d, v in sorted(per_domain.items())}
    return result


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else 0.0


def run(stage: EvalStage, ctx: StageContext) -> StageResult:
    """The ``eval`` stage: serve the model on rollout workers and evaluate it."""
    model_path = ctx.model_path(stage.model)
    rollout = spawn_rollout(ctx.cluster.rollout, ctx.cluster, ctx.engine)
    try:
        rollout.call("load", str(model_path), 0)
        result = evaluate(rollout, ctx.tokenizer(model_path), ctx.rows(stage.eval.data), stage.eval,
                          seed=ctx.seed)
    finally:
        rollout.shutdown()
    ctx.write_eval(result)
    return StageResult(eval=result, artifacts={})

"""Held-out evaluation on rollout workers: pass@1, cons@n, mean response length, per-domain breakdown.

Also the ``eval`` stage kind, which evaluates any model (a path or an earlier stage's checkpoint).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

from actors.types import SamplingParams
from orchestrator.cluster import ActorGroup
from orchestrator.config import EvalSpec, EvalStage
from orchestrator.data.chat import encode_prompt
from orchestrator.stages.context import StageContext, StageResult
from orchestrator.stages.fanout import by_prompt, generate_sharded
from rewards.code import extract_code
from rewards.math_checker.extract import extract_answer
from rewards.registry import get_reward

log = logging.getLogger(__name__)


DEFAULT_GRADERS = {"math": "math", "code": "code", "general": "instruction"}


def evaluate(rollout: ActorGroup, tokenizer, rows: list[dict], spec: EvalSpec | None = None, *,
             max_tokens: int = 256, temperature: float = 0.0, n: int = 1, seed: int = 0) -> dict:
    """Generate on ``rows`` (all of them: ``StageContext.eval_rows`` applies the spec's ``limit``) with the model
    the workers serve now and score every sample.

    Each sample is graded by its row's ``domain`` (``math`` when a row has none): the grader is a reward,
    ``spec.graders[domain]`` (math: sympy equivalence with the row's ``answer``; code: the sandboxed tests;
    general: the instruction checker), and a score of 1 counts as correct. pass@1 is the mean correctness over
    all samples (greedy when temperature is 0, the sampled mean otherwise); cons@n is the correctness of each
    prompt's majority answer over its n samples (only when n > 1; code votes with its program). ``per_domain``
    holds pass@1 (and cons@n) of each domain present.
    """
    graders = dict(DEFAULT_GRADERS)
    if spec is not None:
        max_tokens, temperature, n = spec.max_tokens, spec.temperature, spec.n
        graders.update(spec.graders)
    domains = sorted({_domain(row) for row in rows})
    missing = [d for d in domains if d not in graders]
    if missing:
        raise ValueError(f"No grader for domain(s) {', '.join(missing)}; set eval.graders "
                         f"(domain -> reward name), e.g. {{{missing[0]}: math}}.")
    grade = {d: get_reward(graders[d]) for d in domains}
    prompts = [encode_prompt(tokenizer, r) for r in rows]
    sampling = SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed, logprobs=False,
                              stop_token_ids=[tokenizer.eos_token_id])
    rollouts = generate_sharded(rollout, prompts, sampling)
    groups = by_prompt(rollouts)
    lengths, truncated = [], 0
    correct: dict[str, list[float]] = defaultdict(list)
    voted: dict[str, list[float]] = defaultdict(list)
    for i, row in enumerate(rows):
        domain, samples = _domain(row), groups[i]
        scores = [float(grade[domain](s.text, row).score >= 1.0) for s in samples]
        correct[domain] += scores
        lengths += [len(s.response_ids) for s in samples]
        truncated += sum(s.finish_reason == "length" for s in samples)
        if n > 1:
            voted[domain].append(majority_correct([s.text for s in samples], scores, VOTE_BY.get(domain)))
    everything = [x for d in domains for x in correct[d]]
    result = {
        "pass@1": _mean(everything),
        "mean_response_tokens": _mean(lengths),
        "truncated_fraction": round(truncated / max(1, len(rollouts)), 4),
        "problems": len(rows),
        "samples_per_problem": n,
        "temperature": temperature,
    }
    if n > 1:
        result[f"cons@{n}"] = _mean([x for d in domains for x in voted[d]])
    # Every domain present, even when there is one: summary.json's `eval.per_domain.<domain>.pass@1`.
    result["per_domain"] = {d: {"pass@1": _mean(correct[d]), "problems": len(correct[d]) // max(1, n),
                                **({f"cons@{n}": _mean(voted[d])} if n > 1 else {})} for d in domains}
    return result


def domain_mean(result: dict) -> float:
    """The mean of the domains' pass@1 in an ``evaluate`` result: a model-selection score in which each domain
    weighs the same, however many rows it has (the plain pass@1 when there is one domain)."""
    per_domain = result["per_domain"]
    return _mean([d["pass@1"] for d in per_domain.values()]) if per_domain else result["pass@1"]


def dev_scores(result: dict) -> dict:
    """A dev evaluation's metrics.jsonl fields: ``dev_pass@1`` (``domain_mean``) and, with several domains,
    ``dev_pass@1/<domain>``."""
    per_domain = result["per_domain"]
    extra = {f"dev_pass@1/{d}": v["pass@1"] for d, v in per_domain.items()} if len(per_domain) > 1 else {}
    return {"dev_pass@1": domain_mean(result), **extra}


def _code_vote(text: str) -> str | None:
    code = extract_code(text)
    return None if code is None else "\n".join(line.rstrip() for line in code.strip().splitlines())


# What a sample votes with in cons@n: the final answer (math's extractor) unless its domain says otherwise.
VOTE_BY = {"code": _code_vote}


def majority_correct(texts: list[str], scores: list[float], extract=None) -> float:
    """Majority vote (cons@k): the most common extracted final answer wins (ties: the one seen first), and it is
    correct when the samples that gave it were graded correct. Samples without an answer do not vote.
    ``extract``: text -> answer or None (default: the math extractor's final answer)."""
    answers = [extract(t) if extract else extract_answer(t).answer for t in texts]
    counts = Counter(a.strip() for a in answers if a is not None and a.strip())
    if not counts:
        return 0.0
    top = counts.most_common(1)[0][0]
    return next(s for a, s in zip(answers, scores) if a is not None and a.strip() == top)


def _domain(row: dict) -> str:
    domain = row.get("domain")
    return domain if isinstance(domain, str) and domain else "math"


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else 0.0


def run(stage: EvalStage, ctx: StageContext) -> StageResult:
    """The ``eval`` stage: serve the model on rollout workers and evaluate it. It keeps no checkpoint: a re-run
    after a kill evaluates from the start."""
    model_path = ctx.model_path(stage.model)
    tokenizer, rows = ctx.tokenizer(model_path), ctx.eval_rows(stage.eval)
    rollout = ctx.spawn_rollout()

    def run_eval() -> dict:   # redone from the load when a rollout worker is lost
        rollout.call("load", str(model_path), 0)
        return evaluate(rollout, tokenizer, rows, stage.eval, seed=ctx.seed)

    try:
        result = ctx.retrying(run_eval)
    finally:
        ctx.hand_back()
    ctx.write_eval(result)
    return StageResult(eval=result, artifacts={})

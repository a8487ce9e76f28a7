"""What one RL step holds and reports: the prompt sampler, the scored groups of a step, its metrics.jsonl record
and the stage's summary of them (orchestrator/stages/rl.py runs the steps)."""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

from actors.types import Rollout, StepMetrics
from orchestrator.config import RLStage

PHASES = ("generate", "reward", "logprob", "train", "sync")


# ---------------------------------------------------------------------------------------------- prompts
class PromptSampler:
    """Endless shuffled passes over the prompt rows; its state (pass, position) is part of a checkpoint."""

    def __init__(self, rows: list[dict], seed: int):
        if not rows:
            raise ValueError("The RL stage has no prompts to sample from.")
        self.rows, self.seed, self.epoch, self.pos = rows, seed, 0, 0
        self._order = self._shuffled()

    def _shuffled(self) -> list[int]:
        order = list(range(len(self.rows)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, k: int) -> list[dict]:
        out = []
        while len(out) < k:
            if self.pos == len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._shuffled()
            out.append(self.rows[self._order[self.pos]])
            self.pos += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def restore(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._shuffled()


@dataclass
class Group:
    """One prompt and its n scored completions."""

    row: dict
    prompt_ids: list[int]
    rollouts: list[Rollout]
    rewards: list[float]
    components: list[dict[str, float]]


@dataclass
class StepBatch:
    groups: list[Group]
    all_groups: list[Group] = field(default_factory=list)
    """Every group generated for this step, before dynamic sampling kept some (== groups without it)."""
    drawn: int = 0
    rounds: int = 0
    exhausted: bool = False
    reward_errors: int = 0
    """Samples with a component that reported an error (a completion without an answer counts)."""
    reward_timeouts: int = 0
    reward_unscored: int = 0
    """Samples the rewards could not grade at all (rewards.base.INFRA_ERRORS): scored 0, counted here."""
    generated_tokens: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))


@dataclass
class StepTiming:
    """Where one step's wall time went. Synchronous, the step's own batch is collected and trained in turn.
    Asynchronous, the step trains on a batch collected earlier while it collects the next ones (``ahead``): its
    generate and reward seconds are theirs, and ``overlap`` is the part of them hidden behind training."""

    seconds: dict[str, float]
    generated_tokens: int
    wall: float
    overlap: float | None = None

    @classmethod
    def of(cls, batch: StepBatch, fresh: bool, ahead: list[StepBatch], wall: float) -> StepTiming:
        """``batch`` trained this step, collected in it when ``fresh``; ``ahead``: collected in it for later."""
        collected = ([batch] if fresh else []) + ahead
        seconds = {p: batch.seconds[p] for p in ("logprob", "train", "sync")}
        for phase in ("generate", "reward"):
            seconds[phase] = sum(b.seconds[phase] for b in collected)
        overlap = None
        if ahead or not fresh:
            # Training ran in a thread while the batches ahead were collected: the shorter of the two was hidden.
            overlap = min(seconds["logprob"] + seconds["train"],
                          sum(b.seconds["generate"] + b.seconds["reward"] for b in ahead))
        return cls(seconds, sum(b.generated_tokens for b in collected), wall, overlap)


@contextmanager
def timed(seconds: dict[str, float], phase: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[phase] += time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- records
def step_record(stage: RLStage, step: int, batch: StepBatch, results: list[StepMetrics], version: int,
                trained_tokens: int, timing: StepTiming, t_start: float) -> dict:
    """The metrics.jsonl record of one RL step: rewards and pass rate, lengths, policy version and lag, the
    trainer's loss terms, the time of each phase and throughput. ``version``: the policy version after the step;
    ``trained_tokens``: prompt + response tokens in its batch."""
    samples = [(r, x, c) for g in batch.groups for r, x, c in zip(g.rollouts, g.rewards, g.components)]
    rewards = [x for _, x, _ in samples]
    lengths = [len(r.response_ids) for r, _, _ in samples]
    passed = [stage.passed(c) for _, _, c in samples]
    # How many versions behind the trainer (before this step's updates) the engine that sampled each one was.
    lags = [version - len(results) - r.policy_version for r, _, _ in samples]
    record = {
        "step": step, "policy_version": version,
        "reward_mean": _mean(rewards), "reward_std": statistics.pstdev(rewards) if rewards else 0.0,
        "pass_rate": _mean(passed), "response_length_mean": _mean(lengths),
        "response_length_max": max(lengths, default=0),
        "truncated_fraction": _mean([r.finish_reason == "length" for r, _, _ in samples]),
        "policy_version_lag": _mean(lags),
        "policy_version_lag_max": max(lags, default=0),
        "groups": len(batch.groups), "prompts_drawn": batch.drawn, "refill_rounds": batch.rounds,
        "refill_exhausted": batch.exhausted, "reward_errors": batch.reward_errors,
        "reward_timeouts": batch.reward_timeouts, "reward_unscored": batch.reward_unscored,
        # Which prompts this step drew, in order: two runs (or a run and its resume) drew the same data exactly
        # when these agree.
        "prompts_digest": _digest(g.prompt_ids for g in batch.all_groups or batch.groups),
    }
    domains: dict[str, list[bool]] = defaultdict(list)
    for g in batch.groups:
        domains[g.row.get("domain") or "math"] += [stage.passed(c) for c in g.components]
    if len(domains) > 1:  # a mixed step: each domain's own pass rate (the report draws one curve per domain)
        record.update({f"pass_rate/{d}": _mean(v) for d, v in sorted(domains.items())})
    if batch.all_groups:  # dynamic sampling: the trained groups are a biased subset; these are all draws
        drawn = [(x, c) for g in batch.all_groups for x, c in zip(g.rewards, g.components)]
        record["drawn_reward_mean"] = _mean(x for x, _ in drawn)
        record["drawn_pass_rate"] = _mean(stage.passed(c) for _, c in drawn)
    by_component: dict[str, list[float]] = defaultdict(list)
    for _, _, c in samples:
        for name, value in c.items():
            by_component[name].append(value)
    for name, values in sorted(by_component.items()):
        record[f"reward/{name}_mean"] = _mean(values)
        record[f"reward/{name}_std"] = statistics.pstdev(values)
    for spec in stage.rewards:  # the `language` score is R1's metric, the CoT's share in the target language
        if spec.name == "language" and spec.component in by_component:
            key = "" if spec.component == "language" else f"{spec.component}/"
            record[f"language/{key}target_share"] = _mean(by_component[spec.component])
    if results:
        last = results[-1]
        record.update({"loss": last.loss, "grad_norm": last.grad_norm, "lr": last.lr})
        for key in ("clip_frac", "approx_kl", "kl", "entropy", "ratio_mean", "pg_loss", "rollout_logprob_diff",
                    "tis_weight_mean", "tis_capped_frac"):
            values = [r.extra[key] for r in results if key in r.extra]
            if values:
                record[key] = _mean(values)
        record.update({k: v for k, v in last.extra.items() if k.startswith("moe/")})
    seconds = timing.seconds
    for phase in PHASES:
        record[f"{phase}_s"] = round(seconds[phase], 3)
    record["step_s"] = round(timing.wall, 3)
    record["overhead_s"] = round(timing.wall - sum(seconds.values()) + (timing.overlap or 0.0), 3)
    if timing.overlap is not None:
        record["overlap_s"] = round(timing.overlap, 3)
    record["generated_tokens"] = timing.generated_tokens
    record["generate_tokens_per_s"] = round(timing.generated_tokens / max(seconds["generate"], 1e-9), 1)
    record["train_tokens_per_s"] = round(trained_tokens / max(seconds["train"], 1e-9), 1)
    record["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    return record


def _digest(prompts) -> str:
    h = hashlib.sha256()
    for ids in prompts:
        h.update(b",".join(str(i).encode() for i in ids) + b";")
    return h.hexdigest()[:12]


def _mean(xs) -> float:
    xs = list(xs)
    return float(sum(xs)) / len(xs) if xs else 0.0


def summarise(history: list[dict], dev_curve: list[dict]) -> dict:
    """Stage-level metrics: first/last-window means of the learning signals and the mean time breakdown."""
    window = max(1, min(5, len(history) // 4 or 1))
    first, last = history[:window], history[-window:]
    out = {
        "reward_mean_first": round(_mean(r["reward_mean"] for r in first), 4),
        "reward_mean_last": round(_mean(r["reward_mean"] for r in last), 4),
        "pass_rate_first": round(_mean(r["pass_rate"] for r in first), 4),
        "pass_rate_last": round(_mean(r["pass_rate"] for r in last), 4),
        "response_length_last": round(_mean(r["response_length_mean"] for r in last), 1),
        "mean_step_s": {k: round(_mean(r.get(k, 0.0) for r in history), 3)
                        for k in [f"{p}_s" for p in PHASES] + ["overhead_s", "overlap_s", "step_s"]
                        if k != "overlap_s" or any(k in r for r in history)},
    }
    if dev_curve:
        out["dev_curve"] = dev_curve
    return out

"""RewardWorker: the Ray role that scores rollouts with the configured reward plugins.

A plain class; the orchestrator wraps it where it spawns it:

    worker = ray.remote(num_cpus=2)(RewardWorker).remote(stage.rewards, num_procs=2, deadline_s=60)
    scores = ray.get(worker.score.remote(completions, samples))

It hosts the rewards of `specs` in a pool of processes (rewards/isolation/pool.py), routes each sample by its
`domain` to the rewards that apply, weights and sums them, and enforces a hard wall-clock deadline per sample from
this process (no signal.alarm). Rewards that score whole batches (`http`, `reward_model`) run in this process
instead, once per batch, in a thread beside the pool and under the same deadline; a reward model uses the GPU this
actor reserved. A process that overruns or dies is
killed with everything it started and replaced; the sample scores 0 with the reason in its details. Give the
actor as many CPUs as `num_procs`: the pool processes (and the sandboxes they start) do the work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.actor_log import send_output_to_stage_log
from actors.actor_metrics import records_busy_time
from actors.run_dir_probe import RunDirProbe
from rewards.config import RewardSpec
from rewards.isolation.pool import RewardPool


@dataclass(slots=True)
class RewardScores:
    """Scores for one batch, index-aligned with the completions that were sent."""

    scores: list[float] = field(default_factory=list)
    """[B] weighted total reward per sample."""
    components: list[dict[str, float]] = field(default_factory=list)
    """[B] unweighted score per applicable reward component, by component name."""
    details: list[dict[str, Any]] = field(default_factory=list)
    """[B] each component's details by component name; `error`/`message` at top level for pool failures."""
    errors: int = 0
    """Samples a component could not grade (``Scored.failed``: its code, service or sandbox failed, or the pool
    process crashed), timeouts excluded; a completion's own zero (no answer, unparsable) is not one."""
    timeouts: int = 0
    """Samples that hit the per-sample deadline or whose component timed out."""
    mean_latency_s: float = 0.0
    """Mean wall-clock seconds per sample from dispatch to result."""

    def extend(self, other: RewardScores) -> None:
        """Append ``other``'s samples (the next ones of the same batch) to these."""
        n, m = len(self.scores), len(other.scores)
        if n + m:
            self.mean_latency_s = (self.mean_latency_s * n + other.mean_latency_s * m) / (n + m)
        self.scores += other.scores
        self.components += other.components
        self.details += other.details
        self.errors += other.errors
        self.timeouts += other.timeouts


class RewardWorker(RunDirProbe):
    def __init__(self, specs: list[RewardSpec], num_procs: int = 2, deadline_s: float = 60.0):
        send_output_to_stage_log()
        self._pool = RewardPool(specs, num_procs=num_procs, deadline_s=deadline_s)

    @records_busy_time
    def score(self, completions: list[str], samples: list[dict[str, Any]]) -> RewardScores:
        scored = self._pool.score(completions, samples)
        n = len(scored)
        return RewardScores(
            scores=[s.total for s in scored],
            components=[s.components for s in scored],
            details=[s.details for s in scored],
            errors=sum(s.failed for s in scored),
            timeouts=sum(s.timed_out for s in scored),
            mean_latency_s=sum(s.latency_s for s in scored) / n if n else 0.0,
        )

    def components(self) -> list[str]:
        """The component names this worker reports (for metrics set-up)."""
        return [spec.component for spec in self._pool.specs]

    def close(self) -> None:
        self._pool.close()

"""A stage's budget of actor restarts (``fault_tolerance.max_restarts``), and the retry around work that a
replaced actor can redo.

What is replaced where (README "When things fail"):
- a RolloutWorker or RewardWorker that dies is replaced in its placement bundle; the stage brings the new one up
  (a rollout engine loads the model and receives the current weights) and redoes the interrupted call: a
  generation round is drawn again from the same prompts, and nothing the dead engine produced is kept;
- a PolicyTrainer rank that dies takes the whole trainer group with it (the others are stuck in a collective): the
  stage builds a new group and goes back to its last checkpoint, or its start.

Every restart is logged and counted in the stage's metrics; one past the budget fails the stage with a sentence
naming the role, rank, node and cause.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from orchestrator.cluster import ActorLost
from orchestrator.config import ROLE_CLASSES, Role

log = logging.getLogger(__name__)
T = TypeVar("T")


class RestartsExhausted(RuntimeError):
    pass


class RestartBudget:
    """``on_restart(role)`` is told of every restart spent (the stage's Prometheus counter)."""

    def __init__(self, stage: str, max_restarts: int, on_restart: Callable[[str], None] | None = None):
        self.stage, self.max_restarts, self.on_restart = stage, max_restarts, on_restart
        self.events: list[dict] = []

    def spend(self, lost: ActorLost, step: int | None = None) -> None:
        """Count one restart for ``lost``, or fail the stage when the budget is spent."""
        if len(self.events) >= self.max_restarts:
            raise RestartsExhausted(
                f"Stage {self.stage!r}: {ROLE_CLASSES[lost.role]} rank {lost.rank} on node {lost.node} died "
                f"({lost.cause}) after {len(self.events)} restart(s), the most fault_tolerance.max_restarts="
                f"{self.max_restarts} allows. Find the cause on that node (OOM killer, preemption); re-running the "
                "same command resumes from the stage's last checkpoint.") from lost
        self.events.append({"step": step, "role": lost.role, "rank": lost.rank, "node": lost.node,
                            "cause": str(lost.cause).strip().splitlines()[0][:300] if str(lost.cause).strip() else "",
                            "time": round(time.time(), 3)})
        log.warning("%s: %s (step %s); restart %d of at most %d", self.stage, lost, step, len(self.events),
                    self.max_restarts)
        if self.on_restart is not None:
            self.on_restart(lost.role)

    def retrying(self, work: Callable[[], T], replace: Callable[[ActorLost], None], step: int | None = None,
                 roles: tuple[Role, ...] = ("rollout", "reward")) -> T:
        """Run ``work``; when an actor of ``roles`` is lost, spend a restart, ``replace`` it and run ``work``
        again. ``work`` must be safe to redo from the start. Other losses (a trainer rank) propagate."""
        lost_before: ActorLost | None = None
        while True:
            try:
                if lost_before is not None:   # inside the try: the replacement's own calls may lose an actor too
                    replace(lost_before)
                    lost_before = None
                return work()
            except ActorLost as lost:
                if lost.role not in roles:
                    raise
                self.spend(lost, step)
                lost_before = lost

    def trainer_step(self, step: Callable[[], T], rebuild: Callable[[], None], at: int) -> T | None:
        """Run one training step; when a trainer rank is lost, spend a restart and ``rebuild`` the trainer group
        (back to the last checkpoint), returning None. Losses of other roles propagate."""
        try:
            return step()
        except ActorLost as lost:
            if lost.role != "trainer":
                raise
            self.spend(lost, at)
            rebuild()
            return None

    def report(self) -> dict:
        return {"total": len(self.events), **Counter(e["role"] for e in self.events), "events": self.events}

"""Actors that outlive the stage that started them.

A pipeline's stages run one after another, and most of them need the same roles with the same resources: every
SFT and RL stage a trainer group, nearly every stage rollout engines. Starting a role's actors costs a process,
its imports (vLLM's alone take seconds) and, for trainers, a torch.distributed rendezvous. So a finished stage
hands its groups to this pool, and the next stage that asks for the same role with the same *key* (what the
actors were constructed with) takes them over instead of starting new ones; a different key stops the held group
and starts a new one. The pool holds each role's last group until the pipeline ends.

What a group carries over is its processes and nothing the stage sees: a trainer's ``setup`` drops the previous
engine and builds the new stage's (seeded as in a new actor), a rollout worker drops its engine when it joins the
new stage, so ``load`` builds one afresh, seeded by ``rollout.seed``. A stage therefore computes the same numbers
with taken-over actors as with new ones (tests/e2e/test_resume.py compares a run whose stages took actors over
with one resumed on new actors, value for value). On joining, each actor writes to the new stage's log files and
labels its metrics with the new stage; its Ray name stays the one it was started under
(``<pipeline>/<first stage>/<role>-<rank>``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from orchestrator.cluster import ActorGroup, ActorLost
from orchestrator.config import Role

log = logging.getLogger(__name__)


class ActorPool:
    def __init__(self) -> None:
        self._held: dict[Role, tuple[object, ActorGroup]] = {}
        self.reused: dict[Role, int] = {}
        """Groups taken over by a later stage, per role (in the run's log)."""

    def take(self, role: Role, key: object, join: Callable[[ActorGroup], None]) -> ActorGroup | None:
        """The held group of ``role`` if it was built with an equal ``key`` and all its actors answer ``join`` (the
        caller's hand-over call); else None, with any held group of that role stopped."""
        held = self._held.pop(role, None)
        if held is None:
            return None
        held_key, group = held
        if held_key == key:
            try:
                join(group)
            except ActorLost as lost:   # died while idle: a new group is started, as for a key that differs
                log.warning("a held %s group is gone (%s); starting a new one", role, lost)
            else:
                self.reused[role] = self.reused.get(role, 0) + 1
                return group
        group.shutdown()
        return None

    def keep(self, role: Role, key: object, group: ActorGroup) -> None:
        """Hold ``group`` for the next stage that asks for ``role`` with ``key`` (one group per role)."""
        old = self._held.pop(role, None)
        if old is not None and old[1] is not group:
            old[1].shutdown()
        self._held[role] = (key, group)

    def shutdown(self) -> None:
        for _, group in reversed(list(self._held.values())):
            group.shutdown()
        self._held.clear()

"""Score batches with a pool of reward processes under a hard wall-clock deadline per sample.

The deadline is enforced here, in the parent, by killing the process that overran it (and all it started);
no signal.alarm, which breaks in threads and Ray workers. A killed or crashed process is replaced before the
next sample is handed out, so one pathological sample costs its deadline and a restart, never the batch.
Per-sample rewards run in the pool processes (rewards/isolation/pool_worker.py); rewards that score whole batches in
the host (`RewardSpec.in_host`: http, reward_model) are built once here and run here, once per batch, after
the pool is done.
"""

from __future__ import annotations

import select
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

from rewards.base import RewardResult
from rewards.config import RewardSpec, parse_specs
from rewards.isolation.procs import Child
from rewards.routing import sample_domain
from rewards.registry import get_reward

_STARTUP_TIMEOUT_S = 300.0  # imports and sandbox probes on a loaded machine


@dataclass(slots=True)
class Scored:
    total: float
    components: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    latency_s: float = 0.0
    timed_out: bool = False
    """The sample hit the pool's deadline (or a component reported a timeout)."""
    failed: bool = False
    """A component reported an error other than a timeout, or the pool process crashed."""


class _Slot:
    """One pool process: starting, idle, or working on one sample."""

    def __init__(self, init: Any) -> None:
        self.init = init
        self.task: tuple[int, float] | None = None  # (sample index, start time)
        self._spawn()

    def _spawn(self) -> None:
        self.child = Child("rewards.isolation.pool_worker")
        self.child.send(self.init)
        self.started_at = time.monotonic()
        self.starting = True

    def fileno(self) -> int:
        return self.child.fileno()

    def finish_start(self, deadline: float) -> None:
        try:
            status, message = self.child.recv(deadline=deadline)
        except (EOFError, TimeoutError, OSError) as exc:
            status, message = "failed", f"it exited or hung before it was ready ({exc}); its stderr says why"
        if status != "ready":
            self.child.kill()
            raise RuntimeError(f"A reward process failed to start: {message}")
        self.starting = False

    def restart(self) -> None:
        self.child.kill()
        self.task = None
        self._spawn()


class RewardPool:
    def __init__(self, specs: list[RewardSpec] | list[dict[str, Any]], num_procs: int = 2, deadline_s: float = 60.0):
        if num_procs < 1 or deadline_s <= 0:
            raise ValueError("The reward pool needs num_procs >= 1 and deadline_s > 0.")
        self.specs = parse_specs(specs)
        self.deadline_s = deadline_s
        local = [s.model_dump() for s in self.specs if not s.in_host]
        self._batch = {s.component: get_reward(s.ref, **s.kwargs) for s in self.specs if s.in_host}
        self._slots = [_Slot(local) for _ in range(num_procs)] if local else []
        try:
            for slot in self._slots:  # they start in parallel: all were launched above
                slot.finish_start(time.monotonic() + _STARTUP_TIMEOUT_S)
        except RuntimeError:
            self.close()
            raise

    def score(self, completions: list[Any], samples: list[Mapping[str, Any]]) -> list[Scored]:
        if len(completions) != len(samples):
            raise ValueError(f"Got {len(completions)} completions for {len(samples)} samples; they must match.")
        results = self._score_local(completions, samples) if self._slots else [Scored(0.0) for _ in samples]
        self._score_batch(completions, samples, results)
        return results

    def _score_local(self, completions: list[Any], samples: list[Mapping[str, Any]]) -> list[Scored]:
        results: list[Scored | None] = [None] * len(samples)
        pending = deque(range(len(samples)))
        while pending or any(slot.task for slot in self._slots):
            for slot in self._slots:
                if not slot.starting and slot.task is None and pending:
                    self._dispatch(slot, pending.popleft(), completions, samples, results)
            watched = [slot for slot in self._slots if slot.task or slot.starting]
            if not watched:
                continue
            readable, _, _ = select.select(watched, [], [], self._next_deadline(watched))
            for slot in readable:
                if slot.starting:
                    slot.finish_start(slot.started_at + _STARTUP_TIMEOUT_S)
                else:
                    self._collect(slot, results)
            now = time.monotonic()
            for slot in watched:
                if slot.task and now - slot.task[1] >= self.deadline_s:
                    self._fail(slot, results, "timeout")
                elif slot.starting and now - slot.started_at >= _STARTUP_TIMEOUT_S:
                    raise RuntimeError("A reward process did not restart within the start-up timeout.")
        return results  # type: ignore[return-value]

    def _dispatch(self, slot: _Slot, i: int, completions: list[Any], samples: list[Mapping[str, Any]],
                  results: list[Scored | None]) -> None:
        slot.task = (i, time.monotonic())
        try:
            slot.child.send((i, completions[i], dict(samples[i])))
        except OSError:
            self._fail(slot, results, "worker_crashed")

    def _next_deadline(self, watched: list[_Slot]) -> float:
        ends = [s.task[1] + self.deadline_s if s.task else s.started_at + _STARTUP_TIMEOUT_S for s in watched]
        return max(0.0, min(ends) - time.monotonic())

    def _collect(self, slot: _Slot, results: list[Scored | None]) -> None:
        assert slot.task is not None
        try:
            i, total, components, details = slot.child.recv(deadline=slot.task[1] + self.deadline_s)
        except TimeoutError:
            self._fail(slot, results, "timeout")
            return
        except (EOFError, OSError):
            self._fail(slot, results, "worker_crashed")
            return
        errors = [d.get("error") for d in details.values() if isinstance(d, dict) and d.get("error")]
        latency = time.monotonic() - slot.task[1]
        results[i] = Scored(total, components, details, latency, "timeout" in errors,
                            any(e != "timeout" for e in errors))
        slot.task = None

    def _fail(self, slot: _Slot, results: list[Scored | None], kind: str) -> None:
        """Kill and restart the slot's process; its sample scores 0 with the reason in details."""
        assert slot.task is not None
        i, started = slot.task
        slot.restart()
        message = (f"The sample was not scored within the {self.deadline_s:g} s deadline; its process was killed."
                   if kind == "timeout" else "The reward process died while scoring this sample; it was restarted.")
        results[i] = Scored(0.0, {}, {"error": kind, "message": message}, time.monotonic() - started,
                            timed_out=kind == "timeout", failed=kind != "timeout")

    def _score_batch(self, completions: list[Any], samples: list[Mapping[str, Any]], results: list[Scored]) -> None:
        for spec in self.specs:
            if not spec.in_host:
                continue
            idx = [i for i, s in enumerate(samples) if spec.applies_to(sample_domain(s))]
            if not idx:
                continue
            batch = self._batch[spec.component].batch([completions[i] for i in idx], [samples[i] for i in idx])
            for i, result in zip(idx, batch):
                self._merge(results[i], spec, result)

    def _merge(self, scored: Scored, spec: RewardSpec, result: RewardResult) -> None:
        scored.total += spec.weight * result.score
        scored.components[spec.component] = result.score
        scored.details[spec.component] = result.details
        error = result.details.get("error")
        scored.timed_out |= error == "timeout"
        scored.failed |= bool(error) and error != "timeout"

    def close(self) -> None:
        for slot in self._slots:
            slot.child.close()
        self._slots = []
        for reward in self._batch.values():
            reward.close()

    def __enter__(self) -> "RewardPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

"""Score batches with a pool of reward processes under a hard wall-clock deadline per sample.

The deadline is enforced here, in the parent, by killing the process that overran it (and all it started);
no signal.alarm, which breaks in threads and Ray workers. A killed or crashed process is replaced before the
next sample is handed out, so one pathological sample costs its deadline and a restart, never the batch.
Per-sample rewards run in the pool processes (rewards/isolation/pool_worker.py); rewards that score whole batches in
the host (`RewardSpec.in_host`: http, reward_model) are built once here and called once per batch, each in a thread
that overlaps the pool's work, under the same deadline counted from the moment the batch is dispatched.
"""

from __future__ import annotations

import select
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

from rewards.base import INFRA_ERRORS, RewardResult, failure
from rewards.config import RewardSpec, parse_specs
from rewards.isolation.procs import Child
from rewards.routing import sample_domain
from rewards.registry import SafeReward, get_reward

GRADING_FAILURES = INFRA_ERRORS - {"timeout"}
"""What counts as a reward error (``Scored.failed``); timeouts are counted on their own."""
_STARTUP_TIMEOUT_S = 300.0  # imports and sandbox probes on a loaded machine
_HOST_MARGIN_S = 0.2  # a host reward is told to end this long before the deadline, so that it reports its own reason


@dataclass(slots=True)
class Scored:
    total: float
    components: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    latency_s: float = 0.0
    timed_out: bool = False
    """The sample hit the pool's deadline (or a component reported a timeout)."""
    failed: bool = False
    """The reward could not grade: a component reported an error of a ``GRADING_FAILURES`` kind (its code, service
    or sandbox failed), or the pool process crashed. A completion that earned its zero (``no_answer``,
    ``parse_error``, a program over its limits) is not a failure: an untrained model produces those by the batch."""


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


@dataclass(slots=True, eq=False)
class _HostCall:
    """One batch call of a host reward: started or still waiting for the reward, done or abandoned."""

    end: float
    """The deadline (time.monotonic()) by which the pool stops waiting for it."""
    started: bool = False
    abandoned: bool = False
    results: list[RewardResult] | None = None
    finished: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


class _HostReward:
    """A reward that scores whole batches in this process, one call at a time, each call in a daemon thread.

    A thread, not a process: the reward holds a model or a session that lives in this process, so there is no
    process to kill when a call overruns. Such a call is abandoned (its late result is never read), and the next
    call waits for it within its own deadline, so the reward is never called twice at once."""

    def __init__(self, reward: SafeReward, component: str, deadline_s: float) -> None:
        self.reward, self.component, self.deadline_s = reward, component, deadline_s
        self._lock = threading.Condition()
        self._busy = False

    def start(self, completions: list[Any], samples: list[Mapping[str, Any]], end: float) -> _HostCall:
        call = _HostCall(end)
        threading.Thread(target=self._run, args=(call, completions, samples), daemon=True,
                         name=f"reward-{self.component}").start()
        return call

    def _run(self, call: _HostCall, completions: list[Any], samples: list[Mapping[str, Any]]) -> None:
        until = call.end - min(_HOST_MARGIN_S, self.deadline_s / 10)
        with self._lock:
            self._lock.wait_for(lambda: not self._busy or call.abandoned, until - time.monotonic())
            if self._busy or call.abandoned:
                return
            self._busy = call.started = True
        results = None
        try:
            results = self.reward.batch(completions, samples, deadline=until)
        finally:
            with self._lock:
                self._busy = False
                if not call.abandoned:  # a late result is dropped
                    call.results, call.finished = results, time.monotonic()
                    call.done.set()
                self._lock.notify_all()

    def results(self, call: _HostCall, n: int) -> list[RewardResult]:
        """The call's `n` results once it is done or its deadline has passed: a timeout for each when it is not done
        by then, a reward error for each when it ended without results."""
        call.done.wait(max(0.0, call.end - time.monotonic()))
        with self._lock:
            if not call.done.is_set():
                call.abandoned, call.finished = True, time.monotonic()
                self._lock.notify_all()
                return [failure("timeout", self._late(call.started)) for _ in range(n)]
        if call.results is None or len(call.results) != n:
            message = f"The reward '{self.component}' ended without {n} results."
            return [failure("reward_error", message) for _ in range(n)]
        return call.results

    def _late(self, started: bool) -> str:
        if started:
            return f"The reward '{self.component}' did not answer within the {self.deadline_s:g} s deadline."
        return (f"The reward '{self.component}' was not called: its previous call, past its own deadline, was still "
                f"running at the end of this batch's {self.deadline_s:g} s deadline.")


class RewardPool:
    def __init__(self, specs: list[RewardSpec] | list[dict[str, Any]], num_procs: int = 2, deadline_s: float = 60.0):
        if num_procs < 1 or deadline_s <= 0:
            raise ValueError("The reward pool needs num_procs >= 1 and deadline_s > 0.")
        self.specs = parse_specs(specs)
        self.deadline_s = deadline_s
        local = [s.model_dump() for s in self.specs if not s.in_host]
        self._hosts = {s.component: _HostReward(get_reward(s.ref, **s.kwargs), s.component, deadline_s)
                       for s in self.specs if s.in_host}
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
        start = time.monotonic()
        calls = self._start_hosts(completions, samples, start + self.deadline_s)
        results = self._score_local(completions, samples) if self._slots else [Scored(0.0) for _ in samples]
        for spec, idx, call in calls:
            host = self._hosts[spec.component]
            for i, result in zip(idx, host.results(call, len(idx))):
                self._merge(results[i], spec, result)
                results[i].latency_s = max(results[i].latency_s, call.finished - start)
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
                            any(e in GRADING_FAILURES for e in errors))
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

    def _start_hosts(self, completions: list[Any], samples: list[Mapping[str, Any]],
                     end: float) -> list[tuple[RewardSpec, list[int], _HostCall]]:
        """Start each host reward on the samples it applies to; they run while the pool scores the rest."""
        calls = []
        for spec in filter(lambda spec: spec.in_host, self.specs):
            idx = [i for i, s in enumerate(samples) if spec.applies_to(sample_domain(s))]
            if idx:
                call = self._hosts[spec.component].start([completions[i] for i in idx], [samples[i] for i in idx], end)
                calls.append((spec, idx, call))
        return calls

    def _merge(self, scored: Scored, spec: RewardSpec, result: RewardResult) -> None:
        scored.total += spec.weight * result.score
        scored.components[spec.component] = result.score
        scored.details[spec.component] = result.details
        error = result.details.get("error")
        scored.timed_out |= error == "timeout"
        scored.failed |= error in GRADING_FAILURES

    def close(self) -> None:
        for slot in self._slots:
            slot.child.close()
        self._slots = []
        for host in self._hosts.values():
            host.reward.close()

    def __enter__(self) -> "RewardPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

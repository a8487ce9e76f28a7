"""Metrics an actor records from its own process, so that every node hosting actors exports ``r1ray_*`` metrics.

The driver records the run's numbers (orchestrator/telemetry.py) from the step record, and those leave through
the metrics agent of the driver's node only. What only the actor itself sees is recorded here, where it runs:
how long each of its calls took (``rate()`` of the counter is the share of time the actor works, per rank, so a
straggling node shows) and, for a rollout engine, the tokens it generated (redone rounds included: the work each
engine did, against ``r1ray_generated_tokens``, what the stage kept).

Labels: ``pipeline``, ``stage``, ``role`` as everywhere, plus ``rank`` (and ``call``), all read from the actor's
Ray name ``<pipeline>/<stage>/<role>-<rank>`` (orchestrator/cluster.py ``ActorNames``). An actor without such a
name, or a worker class used outside Ray (unit tests), records nothing.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

TAGS = ("pipeline", "stage", "role")


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: Literal["gauge", "counter", "histogram"]
    description: str
    extra_tags: tuple[str, ...] = ()

    @property
    def tag_keys(self) -> tuple[str, ...]:
        return TAGS + self.extra_tags

    @property
    def series(self) -> tuple[str, ...]:
        """The names Ray's exporter gives this metric in Prometheus."""
        base = "ray_" + self.name
        return {"gauge": (base,), "counter": (base + "_total",),
                "histogram": (base + "_bucket", base + "_sum", base + "_count")}[self.kind]


BUSY = MetricDef("r1ray_actor_busy_seconds", "counter",
                 "seconds an actor spent in its calls (rate: the share of time it works)", ("rank", "call"))
ENGINE_TOKENS = MetricDef("r1ray_engine_generated_tokens", "counter",
                          "response tokens one rollout engine generated, redone rounds included", ("rank",))
ACTOR_METRICS = (BUSY, ENGINE_TOKENS)

_NAME = re.compile(r"^(?P<pipeline>[^/]+)/(?P<stage>[^/]+)/(?P<role>[a-z]+)-(?P<rank>\d+)(\.\d+)?$")


def tags_from_name(name: str | None) -> dict[str, str] | None:
    """``pipeline``, ``stage``, ``role`` and ``rank`` from an actor name the project gave, else None."""
    match = _NAME.match(name or "")
    return None if match is None else {k: match[k] for k in ("pipeline", "stage", "role", "rank")}


class ActorMetrics:
    """The recorder of one actor process. ``counters``: metric name → object with ``inc(value, tags)``."""

    def __init__(self, tags: dict[str, str] | None, counters: dict | None = None):
        self.tags = tags
        self._counters = counters

    def moved_to(self, stage: str) -> None:
        """The actor now works for ``stage`` (a later stage took it over): later counts carry that label."""
        if self.tags is not None:
            self.tags = {**self.tags, "stage": stage}

    def busy(self, call: str, seconds: float) -> None:
        self._inc(BUSY.name, seconds, call=call)

    def generated(self, tokens: int) -> None:
        self._inc(ENGINE_TOKENS.name, tokens)

    def _inc(self, name: str, value: float, **extra: str) -> None:
        if self.tags is None or not value > 0:   # a Ray counter refuses to add nothing
            return
        try:
            self._counters[name].inc(float(value), {**self.tags, **extra})
        except (TypeError, ValueError) as e:   # metrics are a view of the run: never fail a call
            log.warning("metric %s not recorded: %s", name, e)


@functools.cache
def actor_metrics() -> ActorMetrics:
    """This process's recorder, built on first use (Ray keeps one metric registry per process)."""
    try:
        import ray
    except ImportError:  # a worker class used where Ray is not installed (a GPU check with torch alone)
        return ActorMetrics(None)
    if not ray.is_initialized():
        return ActorMetrics(None)
    tags = tags_from_name(ray.get_runtime_context().get_actor_name())
    if tags is None:
        return ActorMetrics(None)
    from ray.util.metrics import Counter

    return ActorMetrics(tags, {m.name: Counter(m.name, m.description, tag_keys=m.tag_keys) for m in ACTOR_METRICS})


def records_busy_time(method):
    """Decorate an actor method: the seconds each call takes go to ``r1ray_actor_busy_seconds{call=<method>}``,
    whether it returns or raises."""

    @functools.wraps(method)
    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            actor_metrics().busy(method.__name__, time.perf_counter() - start)

    return timed

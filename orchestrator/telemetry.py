"""The project's own metrics on Ray's Prometheus endpoint, through ``ray.util.metrics``.

Every metric is defined once, in ``METRICS``; deploy/grafana/r1ray.json queries exactly these names (a test holds
the two together). In Prometheus, Ray prefixes every name with ``ray_``; a counter is exported as
``ray_<name>_total`` and a histogram as ``ray_<name>_bucket`` / ``_sum`` / ``_count`` (``MetricDef.series``,
checked by scraping in tests/ray/test_telemetry.py).

Labels: ``pipeline``, ``stage`` and ``role`` on everything, plus ``phase``, ``component`` or ``kind`` where a
metric says so. ``role`` is the role whose work the number measures (the reward mean is the reward workers',
response length the rollout workers', the loss the trainer's; the stage and step are the ``driver``'s; a restart
carries the role of the actor that was lost).

Where the numbers come from: the driver, from the same per-step record that goes to metrics.jsonl
(``StageTelemetry.step``, fed by ``MetricsLog``), so Prometheus, TensorBoard and metrics.jsonl never disagree.
That includes the numbers first counted inside actors (reward errors and timeouts in ``RewardScores``, generated
tokens in each ``Rollout``): the driver receives them with every call, and counting them there counts what the
stage kept, not the work of a round that a lost actor made the stage redo. Recorded from the driver, they are
exported by the metrics agent of the driver's node (the head's, under ``ray job submit``). What only an actor sees
(its busy seconds, an engine's own token count) it records itself (actors/actor_metrics.py), so every node that
hosts actors exports ``r1ray_`` metrics too.

Ray exports a histogram's ``_sum`` from its buckets' midpoints, not from the values observed (Ray 2.60,
``open_telemetry_metric_recorder``), so every number meant to be read exactly is a gauge (the last value) or a
counter (a running total); the histograms, of the weight sync's and the checkpoint's seconds, are there for their
counts and quantiles.

Ray also forgets a gauge about two report intervals (20 s by default) after it was last set, while steps on a
cluster take minutes: so while a stage runs, ``StageTelemetry`` sets its gauges' last values again every
``refresh_s`` seconds, from one daemon thread that ``finished`` stops (the ended stage's gauges then age out).

Without a metrics agent (Ray not initialised, as in the unit tests, or no agent running) ``ray.util.metrics``
records go nowhere and cost next to nothing; a value the library rejects is logged, never raised: metrics are a
view of the run and never fail it.
"""

from __future__ import annotations

import logging
import math
import threading
from functools import cache

from actors.actor_metrics import ACTOR_METRICS, MetricDef

log = logging.getLogger(__name__)

SECONDS_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]
"""Histogram bounds for every duration here: a tiny CPU step is under a second, a large cluster's up to an hour."""

PHASE_ROLES = {"generate": "rollout", "reward": "reward", "logprob": "trainer", "train": "trainer",
               "sync": "trainer", "dev_eval": "rollout"}
"""The phases of a step (metrics.jsonl's ``<phase>_s``) and the role whose work each one is."""


METRICS = (
    MetricDef("r1ray_stage_running", "gauge", "1 while the stage runs in this driver, 0 once it has ended",
              ("kind",)),
    MetricDef("r1ray_step", "gauge", "the last step the stage finished"),
    MetricDef("r1ray_sft_loss", "gauge", "SFT loss of the last step (token mean over the global batch)"),
    MetricDef("r1ray_sft_tokens_per_second", "gauge", "SFT tokens trained per second, all ranks, last step"),
    MetricDef("r1ray_rl_reward_mean", "gauge", "mean weighted reward of the samples trained in the last RL step"),
    MetricDef("r1ray_rl_reward_component_mean", "gauge", "mean score of one reward component, last RL step",
              ("component",)),
    MetricDef("r1ray_rl_pass_rate", "gauge", "fraction of the last RL step's samples that solved their prompt"),
    MetricDef("r1ray_rl_response_length", "gauge", "mean response length in tokens, last RL step"),
    MetricDef("r1ray_rl_policy_version_lag", "gauge",
              "mean versions the engine that sampled the last RL step's batch was behind the trainer (async > 0)"),
    MetricDef("r1ray_generated_tokens", "counter", "response tokens generated for RL steps (refill rounds included)"),
    MetricDef("r1ray_phase_seconds", "gauge", "seconds the last step spent in a phase", ("phase",)),
    MetricDef("r1ray_phase_seconds_spent", "counter", "seconds all steps so far spent in a phase", ("phase",)),
    MetricDef("r1ray_weight_sync_seconds", "histogram", "seconds of one weight sync, trainer to every engine"),
    MetricDef("r1ray_weight_sync_bytes", "gauge", "bytes of weights the last sync moved (one copy)"),
    MetricDef("r1ray_reward_errors", "counter", "samples a reward component could not grade (its code, service or sandbox failed)"),
    MetricDef("r1ray_reward_timeouts", "counter", "samples whose reward hit its deadline"),
    MetricDef("r1ray_actor_restarts", "counter", "actors lost and replaced (role: the lost actor's)"),
    MetricDef("r1ray_checkpoint_seconds", "histogram", "seconds to write one resumable checkpoint"),
)
EXPORTED = METRICS + ACTOR_METRICS
"""Every ``r1ray_`` metric: the driver's, recorded here, and the actors' own (actors/actor_metrics.py)."""
METRIC_NAMES = frozenset(m.name for m in METRICS)
_KINDS = {m.name: m.kind for m in METRICS}
_METHODS = {"gauge": "set", "counter": "inc", "histogram": "observe"}


@cache
def ray_instruments() -> dict:
    """The Ray metric objects of ``METRICS``, made once per process: Ray keeps one registry per process, and a
    metric made twice would be registered twice."""
    from ray.util.metrics import Counter, Gauge, Histogram

    out = {}
    for m in METRICS:
        if m.kind == "histogram":
            out[m.name] = Histogram(m.name, m.description, boundaries=SECONDS_BUCKETS, tag_keys=m.tag_keys)
        else:
            out[m.name] = {"gauge": Gauge, "counter": Counter}[m.kind](m.name, m.description, tag_keys=m.tag_keys)
    return out


class StageTelemetry:
    """What one stage reports to Prometheus; the stage's context calls it once per step record and per event.

    ``instruments``: metric name → object with ``set``/``inc``/``observe`` (default: Ray's, ``ray_instruments``).
    ``refresh_s``: how often the gauges' last values are set again between ``started`` and ``finished``."""

    def __init__(self, pipeline: str, stage: str, kind: str, instruments: dict | None = None,
                 refresh_s: float = 5.0):
        self.kind, self.refresh_s = kind, refresh_s
        self.tags = {"pipeline": pipeline, "stage": stage}
        self._instruments = instruments
        self._gauges: dict[tuple[str, tuple], float] = {}
        """(name, tags) → the last value set, for the refresher."""
        self._lock = threading.Lock()   # a refresh never sets a value older than the one just recorded
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    # ------------------------------------------------------------------ events
    def started(self) -> None:
        self._record("r1ray_stage_running", 1, "driver", kind=self.kind)
        if self._refresher is None:
            self._refresher = threading.Thread(target=self._refresh, name=f"telemetry-{self.tags['stage']}",
                                               daemon=True)
            self._refresher.start()

    def finished(self) -> None:
        self._record("r1ray_stage_running", 0, "driver", kind=self.kind)
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()

    def restart(self, role: str) -> None:
        """One actor of ``role`` was lost and replaced (``RestartBudget.spend``)."""
        self._record("r1ray_actor_restarts", 1, role)

    def checkpoint(self, seconds: float) -> None:
        """One checkpoint written, begin to commit (``StageCheckpoints.commit``)."""
        self._record("r1ray_checkpoint_seconds", seconds, "trainer")

    def weight_sync(self, seconds: float, nbytes: int) -> None:
        """One weight sync from the trainers into every engine, of ``nbytes`` bytes of weights."""
        self._record("r1ray_weight_sync_seconds", seconds, "trainer")
        self._record("r1ray_weight_sync_bytes", nbytes, "trainer")

    # ------------------------------------------------------------------ the per-step record
    def step(self, record: dict) -> None:
        """A metrics.jsonl record (orchestrator/stages/rl_step.py ``step_record``, the SFT loop's record): each
        number that has a metric goes to it; the rest stay in metrics.jsonl only."""
        if "step" in record:
            self._record("r1ray_step", record["step"], "driver")
        if self.kind == "sft":
            self._record("r1ray_sft_loss", record.get("loss"), "trainer")
            self._record("r1ray_sft_tokens_per_second", record.get("tokens_per_s"), "trainer")
        if self.kind == "rl":
            self._rl_step(record)
        for phase, role in PHASE_ROLES.items():
            self._record("r1ray_phase_seconds", record.get(f"{phase}_s"), role, phase=phase)
            self._record("r1ray_phase_seconds_spent", record.get(f"{phase}_s"), role, phase=phase)

    def _rl_step(self, record: dict) -> None:
        self._record("r1ray_rl_reward_mean", record.get("reward_mean"), "reward")
        self._record("r1ray_rl_pass_rate", record.get("pass_rate"), "reward")
        self._record("r1ray_rl_response_length", record.get("response_length_mean"), "rollout")
        self._record("r1ray_rl_policy_version_lag", record.get("policy_version_lag"), "rollout")
        self._record("r1ray_generated_tokens", record.get("generated_tokens"), "rollout")
        self._record("r1ray_reward_errors", record.get("reward_errors"), "reward")
        self._record("r1ray_reward_timeouts", record.get("reward_timeouts"), "reward")
        for key, value in record.items():
            if key.startswith("reward/") and key.endswith("_mean"):
                component = key[len("reward/"):-len("_mean")]
                self._record("r1ray_rl_reward_component_mean", value, "reward", component=component)

    # ------------------------------------------------------------------ recording
    def _record(self, name: str, value, role: str, **extra: str) -> None:
        """Set a gauge, add to a counter (only what is above zero: a counter cannot add nothing), or observe a
        histogram. A missing value (None) or one that is not a number records nothing."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        value = float(value)
        kind = _KINDS[name]
        if kind == "counter" and not value > 0:
            return
        if kind == "histogram" and not math.isfinite(value):
            return
        tags = {**self.tags, "role": role, **extra}
        with self._lock:
            if self._emit(name, value, tags) and kind == "gauge":
                self._gauges[name, tuple(sorted(tags.items()))] = value

    def _emit(self, name: str, value: float, tags: dict) -> bool:
        instrument = (ray_instruments() if self._instruments is None else self._instruments)[name]
        try:
            getattr(instrument, _METHODS[_KINDS[name]])(value, tags)
            return True
        except (TypeError, ValueError) as e:   # the metrics are a view of the run: never fail it
            log.warning("metric %s not recorded (value %r, tags %s): %s", name, value, tags, e)
            return False

    def _refresh(self) -> None:
        while not self._stop.wait(self.refresh_s):
            with self._lock:
                for (name, tags), value in self._gauges.items():
                    self._emit(name, value, dict(tags))


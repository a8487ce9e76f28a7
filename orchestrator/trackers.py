"""Experiment trackers beside TensorBoard: Weights & Biases and MLflow, chosen in the pipeline's ``trackers:``.

```yaml
trackers:
  wandb:  {project: r1, mode: offline, entity: null, tags: []}   # offline: RUN_DIR/wandb/offline-run-*
  mlflow: {tracking_uri: null, experiment: null}                 # null: sqlite:///RUN_DIR/mlflow.db
```

Contract: one tracker run per ``run`` of a pipeline, opened by the driver (actors never log), named after the
pipeline, with the validated pipeline as its config (MLflow: flattened params). Each stage logs the numeric
scalars of its metrics.jsonl records under ``<stage>/<key>`` at the record's ``step`` (wandb: against the step
metric ``<stage>/step``, as one wandb run's own step must only grow). A resumed stage logs from the step after
its checkpoint (what ``MetricsLog`` keeps was logged by the earlier run), and a stage rewound to a checkpoint
does not log again a step it already logged. The run is closed when the pipeline ends, marked failed when a
stage failed.

Neither library is a dependency: both are imported only when chosen, and a chosen one that is not installed is
a validation error of its section (so ``validate``, ``plan`` and ``run`` say so before anything starts). A tracker
that raises while the run goes on is logged and dropped: trackers are a view of the run and never fail it.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

from pydantic import model_validator

from orchestrator.run_dir import scalars
from orchestrator.section import Section

log = logging.getLogger(__name__)
PipelineSpec = Any
"""orchestrator.config.PipelineSpec, which holds this module's schema (an import of it here would be a cycle)."""

INSTALL = {"wandb": "wandb==0.31.0", "mlflow": "mlflow-skinny==3.18.0", "sqlalchemy": "sqlalchemy==2.1.9",
           "alembic": "alembic==1.20.1"}
"""What ``pip install`` brings each module the trackers import (the ``trackers`` extra of pyproject.toml)."""


def require(*modules: str) -> None:
    """Raise a ValueError naming the pip command when one of ``modules`` cannot be imported."""
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        raise ValueError(f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} not installed: "
                         f"pip install {' '.join(INSTALL[m] for m in absent)} (or pip install 'r1ray[trackers]')")


# ---------------------------------------------------------------------------------------------- schema
class WandbSpec(Section):
    """A Weights & Biases run. ``offline`` writes RUN_DIR/wandb/ and needs no network (``wandb sync`` uploads it
    later); ``online`` needs a login; ``disabled`` keeps the section without logging."""

    project: str | None = None
    """Default: the pipeline's name."""
    entity: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"
    name: str | None = None
    tags: list[str] = []

    @model_validator(mode="after")
    def _installed(self) -> WandbSpec:
        if self.mode != "disabled":
            require("wandb")
        return self


class MLflowSpec(Section):
    """An MLflow run. ``tracking_uri`` null is ``sqlite:///RUN_DIR/mlflow.db`` (works offline); a ``file:`` store
    needs MLFLOW_ALLOW_FILE_STORE=true with MLflow 3; an ``http(s):`` server needs the network."""

    tracking_uri: str | None = None
    experiment: str | None = None
    """Default: the pipeline's name."""

    @model_validator(mode="after")
    def _installed(self) -> MLflowSpec:
        database = self.tracking_uri is None or not self.tracking_uri.startswith(("file:", "http:", "https:"))
        require("mlflow", *(("sqlalchemy", "alembic") if database else ()))
        return self


class TrackersSpec(Section):
    """Trackers fed beside metrics.jsonl and TensorBoard (which are always written); none by default."""

    wandb: WandbSpec | None = None
    mlflow: MLflowSpec | None = None


# ---------------------------------------------------------------------------------------------- trackers
class Tracker(Protocol):
    def log(self, stage: str, scalars: dict[str, float], step: int) -> None:
        """Log ``scalars`` (keys without the stage) of ``stage`` at ``step``."""

    def finish(self, failed: bool) -> None: ...


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested config as ``a.b.0.c`` → string, the shape MLflow's params take."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: str(value)}
    return {k: v for key, item in items for k, v in flatten(item, f"{prefix}.{key}" if prefix else str(key)).items()}


class WandbTracker:
    def __init__(self, spec: WandbSpec, pipeline: PipelineSpec, root: Path):
        import wandb

        self.run = wandb.init(project=spec.project or pipeline.name, entity=spec.entity, mode=spec.mode,
                              name=spec.name or pipeline.name, tags=spec.tags, dir=str(root),
                              config=pipeline.model_dump(mode="json"),
                              settings=wandb.Settings(silent=True, console="off"))
        self.stages: set[str] = set()

    def log(self, stage: str, scalars: dict[str, float], step: int) -> None:
        if stage not in self.stages:  # each stage's metrics plot against its own steps
            self.stages.add(stage)
            self.run.define_metric(f"{stage}/step")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
        self.run.log({f"{stage}/step": step, **{f"{stage}/{k}": v for k, v in scalars.items()}})

    def finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MLflowTracker:
    def __init__(self, spec: MLflowSpec, pipeline: PipelineSpec, root: Path):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(spec.tracking_uri or f"sqlite:///{root.resolve() / 'mlflow.db'}")
        name = spec.experiment or pipeline.name
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=pipeline.name).info.run_id
        params = [Param(k, v[:6000]) for k, v in flatten(pipeline.model_dump(mode="json")).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, stage: str, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"{stage}/{k}", float(v), now, step)
                                                    for k, v in scalars.items()])

    def finish(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


class Trackers:
    """The trackers of one pipeline run (none: every call does nothing)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers
        self.logged: dict[str, int] = {}
        """Per stage, the last step sent: a rewound stage skips what it sent before."""

    def stage(self, name: str, resume_step: int | None = None) -> Callable[[dict], None]:
        """What ``MetricsLog.on_log`` calls for stage ``name``; ``resume_step``: its checkpoint's step."""
        if resume_step is not None:
            self.logged[name] = max(self.logged.get(name, resume_step), resume_step)

        def on_log(record: dict) -> None:
            step = record.get("step")
            if isinstance(step, int) and step > self.logged.get(name, -1):
                self.logged[name] = step
                self._each(lambda t: t.log(name, scalars(record), step))
        return on_log

    def finish(self, failed: bool) -> None:
        self._each(lambda t: t.finish(failed))
        self.trackers = []

    def _each(self, call: Callable[[Tracker], None]) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as e:  # noqa: BLE001 -- a tracker is a view of the run; it never fails it
                log.warning("tracker %s dropped: %s", type(tracker).__name__, e, exc_info=True)
                self.trackers.remove(tracker)


def open_trackers(pipeline: PipelineSpec, root: Path) -> Trackers:
    """Start the trackers ``pipeline.trackers`` chooses, writing under the run directory ``root``."""
    spec, trackers = pipeline.trackers, []
    if spec.wandb is not None and spec.wandb.mode != "disabled":
        trackers.append(WandbTracker(spec.wandb, pipeline, root))
    if spec.mlflow is not None:
        trackers.append(MLflowTracker(spec.mlflow, pipeline, root))
    return Trackers(trackers)

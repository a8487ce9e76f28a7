"""What a run directory says about a run, read defensively for the report (orchestrator/run_report.py).

``load_run`` turns summary.json, pipeline.yaml and each stage's status.json, metrics.jsonl and eval.json into
``RunRecord``/``StageRecord`` records; a missing or torn file leaves a field empty, never raises. The helpers below
derive what the report plots: a stage's time split into phases, its pass@1 and cons@k keys, dev points, the
rejection-sampling filter report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

RL_PHASES = ("generate", "reward", "logprob", "train", "sync", "overhead")
BETWEEN_STEPS = "between steps (dev eval, checkpoints)"
DEV_EVAL = "dev eval (early stopping)"
REST = "rest of the stage (actors, loading, saving, final eval)"


@dataclass
class StageRecord:
    """One stage as the run directory records it; ``records`` are its metrics.jsonl lines."""

    name: str
    kind: str
    status: str
    seconds: float | None = None
    metrics: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    error: str | None = None
    records: list[dict] = field(default_factory=list)

    def rows(self, key: str) -> list[dict]:
        """Records with a step and a finite number under ``key``."""
        return [r for r in self.records if number(r.get("step")) is not None and number(r.get(key)) is not None]


@dataclass
class RunRecord:
    pipeline: str
    status: str
    stages: list[StageRecord]

# ---------------------------------------------------------------------------------------------- reading
def number(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # the torn last line of a stage that is still writing
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def as_dict(x) -> dict:
    return x if isinstance(x, dict) else {}


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _planned_stages(spec: dict) -> list[tuple[str, str]]:
    """(name, kind) of the stages in the run's copy of its pipeline, in order."""
    stages = spec.get("stages")
    if not isinstance(stages, list):
        return []
    return [(str(s["name"]), str(s.get("kind", "?"))) for s in stages if isinstance(s, dict) and "name" in s]


def load_run(run_dir: Path) -> RunRecord:
    """The run's stages in pipeline order: those the summary records, then any the pipeline names that never
    ran (status ``not run``) or have no record yet."""
    summary = as_dict(_read_json(run_dir / "summary.json"))
    spec = as_dict(_read_yaml(run_dir / "pipeline.yaml"))
    planned = _planned_stages(spec)
    recorded = {str(s["name"]): s for s in summary.get("stages") or [] if isinstance(s, dict) and "name" in s}
    kinds = dict(planned)
    order = [n for n, _ in planned] + [n for n in recorded if n not in kinds]
    status = str(summary.get("status") or "unknown")
    stages = []
    for name in order:
        entry = recorded.get(name) or as_dict(_read_json(run_dir / name / "status.json"))
        sdir = run_dir / name
        default = ("running" if status == "running" else "unfinished") if sdir.is_dir() else "not run"
        stages.append(StageRecord(
            name=name, kind=str(entry.get("kind") or kinds.get(name, "?")), status=str(entry.get("status") or default),
            seconds=number(entry.get("seconds")), metrics=as_dict(entry.get("metrics")),
            eval=as_dict(entry.get("eval")) or as_dict(_read_json(sdir / "eval.json")),
            artifacts=as_dict(entry.get("artifacts")), error=entry.get("error") or None,
            records=_read_jsonl(sdir / "metrics.jsonl")))
    name = summary.get("pipeline") or spec.get("name") or run_dir.name
    return RunRecord(pipeline=str(name), status=status, stages=stages)

# ---------------------------------------------------------------------------------------------- derived numbers
def time_breakdown(stage: StageRecord) -> dict[str, float]:
    """Seconds of a stage by phase; the phases add up to the stage's recorded seconds.

    RL: the per-step phase timings summed over steps; what happened between steps (dev evaluations,
    checkpoints) from the records' wall-clock stamps; the rest of the stage (spawning actors, loading, the
    final save and eval) as one segment. SFT: train steps, early-stopping evaluations (the gap between a
    step's record and its dev record) and the rest. A stage whose metrics carry ``seconds`` by phase
    (rejection sampling: generate, reward): those and the rest. Otherwise the whole stage as one segment."""
    seconds = stage.seconds
    if stage.kind == "rl" and stage.rows("step_s"):
        steps = stage.rows("step_s")
        parts = {p: sum(number(r.get(f"{p}_s")) or 0.0 for r in steps) for p in RL_PHASES}
        in_steps = sum(number(r["step_s"]) for r in steps)
        loop = _loop_seconds(steps, steps)
        if loop is not None:
            parts[BETWEEN_STEPS] = loop - in_steps
        inside = in_steps if loop is None else max(loop, in_steps)
    elif stage.kind == "sft" and _loop_seconds(stage.rows("loss"), stage.records) is not None:
        loop = _loop_seconds(stage.rows("loss"), stage.records)
        loss_time = {r["step"]: number(r.get("time")) for r in stage.rows("loss")}
        dev = sum(max(0.0, number(r.get("time")) - loss_time[r["step"]]) for r in stage.rows("dev_pass@1")
                  if number(r.get("time")) is not None and loss_time.get(r["step"]) is not None)
        parts, inside = {"train": loop - dev, DEV_EVAL: dev}, loop
    elif phases := {str(k): number(v) for k, v in as_dict(stage.metrics.get("seconds")).items() if number(v) is not None}:
        parts, inside = phases, sum(phases.values())
    else:
        return {f"{stage.kind} (whole stage)": seconds} if seconds else {}
    if seconds is not None:
        parts[REST] = seconds - inside
    return {k: round(v, 3) for k, v in parts.items() if v > 0.0005}


def _loop_seconds(timed: list[dict], records: list[dict]) -> float | None:
    """Wall seconds from the loop's start (a record's stamp less its ``elapsed_s``; the smallest such, since
    a dev evaluation can sit between the two) to the last record's stamp."""
    starts = [number(r.get("time")) - number(r.get("elapsed_s")) for r in timed
              if number(r.get("time")) is not None and number(r.get("elapsed_s")) is not None]
    ends = [number(r.get("time")) for r in records if number(r.get("time")) is not None]
    return max(0.0, max(ends) - min(starts)) if starts and ends else None


def pass_at_1(stage: StageRecord) -> float | None:
    return number(stage.eval.get("pass@1"))


def cons_keys(stage: StageRecord) -> list[str]:
    return sorted((k for k in stage.eval if k.startswith("cons@") and number(stage.eval[k]) is not None),
                  key=lambda k: (len(k), k))


def headline(run: RunRecord) -> dict:
    """Total seconds, the last succeeded stage with a pass@1 ("final"), the first SFT stage with one
    ("baseline") and the gain between them."""
    scored = [s for s in run.stages if s.status == "succeeded" and pass_at_1(s) is not None]
    sft = [s for s in scored if s.kind == "sft"]
    final, base = (scored[-1] if scored else None), (sft[0] if sft else None)
    out = {"seconds": sum(s.seconds or 0.0 for s in run.stages), "final": final, "baseline": base, "gain": None}
    if final is not None and base is not None and final is not base:
        out["gain"] = pass_at_1(final) - pass_at_1(base)
    return out


def dev_points(stage: StageRecord) -> list[tuple[float, float]]:
    """Held-out pass@1 by step: the stage summary's curve (RL's includes step 0), else the metrics records."""
    curve = stage.metrics.get("dev_curve") or stage.metrics.get("early_stopping")
    points = []
    if isinstance(curve, list):
        for p in curve:
            p = as_dict(p)
            x, y = number(p.get("step")), number(p.get("dev_pass@1", p.get("pass@1")))
            if x is not None and y is not None:
                points.append((x, y))
    return points or [(r["step"], r["dev_pass@1"]) for r in stage.rows("dev_pass@1")]


def filter_report(stage: StageRecord) -> dict | None:
    """A rejection-sampling stage's ``filter_report`` (candidates, kept, dropped by reason, mixed_in)."""
    report = as_dict(stage.metrics.get("filter_report"))
    return report or None

# ---------------------------------------------------------------------------------------------- figures

"""What a run leaves behind: the run directory's state, per-stage metrics and the summary.

```
RUN_DIR/pipeline.yaml  summary.json  events/            (TensorBoard, one subfolder per stage)
RUN_DIR/<stage>/status.json  metrics.jsonl  eval.json  checkpoint/
```
``summary.json`` is read by tools outside the project: its keys (pipeline, status, stages[name, kind,
status, seconds, metrics, eval, artifacts]) are a fixed interface. Files are replaced atomically so a
reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def truncate_jsonl(path: Path, last_step: int) -> list[dict]:
    """Keep the records of ``path`` whose ``step`` is at most ``last_step`` (a torn last line goes too), rewritten
    atomically; returns them."""
    kept = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= last_step:
                kept.append(record)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)
    return kept


def unwritable(root: Path) -> str | None:
    """Why a run directory at ``root`` cannot be written (a sentence), or None: checked before anything starts."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        return (f"the run directory {root} is not writable ({e.strerror or e}); pass --run-dir a directory this "
                "user can write (on a cluster: shared storage every node reaches)")
    return None


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics record that get plotted against its step: TensorBoard's, and the trackers'."""
    return {k: v for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "time")}


class MetricsLog:
    """Appends one JSON line per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    ``resume_step``: None starts the stage's log afresh (what an earlier attempt logged goes); a step N keeps the
    records up to N, rewritten atomically, and drops the rest, so a resumed stage logs each step exactly once.
    TensorBoard hides the events past N (``purge_step``). ``on_log`` sees every record as it is logged (the stage's
    Prometheus metrics, orchestrator/telemetry.py)."""

    def __init__(self, path: Path, tb_dir: Path | None = None, resume_step: int | None = None,
                 on_log: Callable[[dict], None] | None = None):
        self.path, self.tb_dir, self.on_log = path, tb_dir, on_log
        self.file, self.tb = None, None
        self.kept = self._open(resume_step)
        """The records kept from an earlier attempt (empty when starting afresh)."""

    def rewind(self, step: int) -> list[dict]:
        """Drop every record past ``step``, as when a stage goes back to its checkpoint at ``step``."""
        self.close()
        self.kept = self._open(step)
        return self.kept

    def _open(self, resume_step: int | None) -> list[dict]:
        if resume_step is None:
            if self.tb_dir is not None:
                shutil.rmtree(self.tb_dir, ignore_errors=True)
            kept: list[dict] = []
            self.file = self.path.open("w")
        else:
            kept = truncate_jsonl(self.path, resume_step)
            self.file = self.path.open("a")
        if self.tb_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = None if resume_step is None else resume_step + 1
                self.tb = SummaryWriter(str(self.tb_dir), purge_step=purge)
            except ImportError:  # TensorBoard is optional at run time; metrics.jsonl is the record
                self.tb = None
        return kept

    def log(self, record: dict, step: int | None = None) -> None:
        self.file.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
        self.file.flush()
        if self.on_log is not None:
            self.on_log(record)
        if self.tb is not None and step is not None:
            for key, value in scalars(record).items():
                self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class RunDir:
    """The run directory: which stages finished (with what config), and the summary built from them."""

    MARKER = ".r1ray-run"
    """Written at the start of a run with a fresh token; every actor reads it back (actors/run_dir_probe.py)."""

    def __init__(self, root: Path, pipeline_name: str):
        self.root = root
        self.pipeline_name = pipeline_name
        root.mkdir(parents=True, exist_ok=True)
        self.token: str | None = None

    def mark(self) -> str:
        """Write this run's marker (once per driver) and return its token."""
        if self.token is None:
            self.token = uuid.uuid4().hex
            tmp = self.root / (self.MARKER + ".tmp")
            tmp.write_text(self.token + "\n")
            os.replace(tmp, self.root / self.MARKER)
        return self.token

    def stage_dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def status(self, name: str) -> dict | None:
        return read_json(self.root / name / "status.json")

    def is_finished(self, name: str, fp: str) -> bool:
        status = self.status(name)
        return bool(status) and status.get("status") == "succeeded" and status.get("fingerprint") == fp

    def record(self, name: str, kind: str, status: str, fp: str, seconds: float, result: dict | None = None,
               error: str | None = None) -> None:
        result = result or {}
        write_json(self.stage_dir(name) / "status.json", {
            "name": name, "kind": kind, "status": status, "fingerprint": fp, "seconds": round(seconds, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "metrics": result.get("metrics", {}),
            "eval": result.get("eval", {}), "artifacts": result.get("artifacts", {}), "error": error,
        })

    def artifact(self, stage: str, key: str) -> Path:
        """Absolute path of an artifact a finished stage recorded (e.g. its checkpoint)."""
        status = self.status(stage) or {}
        rel = status.get("artifacts", {}).get(key)
        if rel is None:
            raise RuntimeError(f"Stage {stage!r} has no {key!r} artifact in {self.root}; did it finish?")
        return self.root / rel

    def write_summary(self, stage_names: list[str], status: str) -> dict:
        stages = []
        for name in stage_names:
            st = self.status(name)
            if st is None:
                continue
            stages.append({k: st.get(k) for k in ("name", "kind", "status", "seconds", "metrics", "eval",
                                                  "artifacts")} | ({"error": st["error"]} if st.get("error") else {}))
        summary = {"pipeline": self.pipeline_name, "status": status, "stages": stages}
        write_json(self.root / "summary.json", summary)
        return summary

"""The optional trackers: real wandb (offline) and MLflow (a local SQLite store) read back what a stage logged;
their section is checked like the rest of the schema; a chosen tracker that is not installed stops the pipeline
at validation; a resumed or rewound stage logs each step once. No network: wandb runs offline throughout."""

from __future__ import annotations

import json
import struct
import sys

import pytest

from orchestrator.run_dir import MetricsLog
from orchestrator.trackers import Trackers, open_trackers
from orchestrator.yaml_errors import PipelineError, parse_pipeline
from tests.unit.test_config import GOOD


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
                       "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
                       "WANDB_ERROR_REPORTING": "false", "WANDB_DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(key, value)


def spec(trackers: str = ""):
    return parse_pipeline(GOOD + trackers, "p.yaml")


def problems(trackers: str) -> list[str]:
    with pytest.raises(PipelineError) as e:
        spec(trackers)
    return e.value.problems


def log_steps(trackers: Trackers, stage: str, steps, resume_step: int | None = None, path=None) -> None:
    metrics = MetricsLog(path, resume_step=resume_step, on_log=trackers.stage(stage, resume_step))
    for step in steps:
        metrics.log({"step": step, "loss": 1.0 / step, "note": "text", "stopped": False}, step=step)
    metrics.close()


def wandb_records(run_dir) -> list:
    """The protobuf records of the one offline run under ``run_dir``: its .wandb file is a LevelDB-style log
    (a 7-byte file header, then 7-byte record headers: CRC, length, type) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    [path] = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data, records, pos, chunk = path.read_bytes(), [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:   # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = chunk + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):   # FULL or LAST: a record is complete
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def test_wandb_offline_run_holds_each_step_under_the_stage(tmp_path):
    trackers = open_trackers(spec("trackers:\n  wandb: {project: r1, tags: [t]}\n"), tmp_path)
    log_steps(trackers, "s1", [1, 2], path=tmp_path / "m.jsonl")
    trackers.finish(failed=True)
    records = wandb_records(tmp_path)
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [(h["s1/step"], h["s1/loss"]) for h in history] == [(1, 1.0), (2, 0.5)]
    assert not any("s1/note" in h or "s1/stopped" in h for h in history)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.project == "r1" and list(run.tags) == ["t"] and run.display_name == "p"
    assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [1]


def test_mlflow_default_store_is_sqlite_in_the_run_dir(tmp_path):
    from mlflow.tracking import MlflowClient

    trackers = open_trackers(spec("trackers:\n  mlflow: {}\n"), tmp_path)
    log_steps(trackers, "s1", [1, 2, 3], path=tmp_path / "m.jsonl")
    log_steps(trackers, "s2", [1], path=tmp_path / "m2.jsonl")
    trackers.finish(failed=False)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("p").experiment_id])
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "s1/loss")] == [
        (1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "s2/loss")] == [1]
    assert run.info.status == "FINISHED" and run.info.run_name == "p"
    assert run.data.params["stages.0.train.steps"] == "2" and run.data.params["name"] == "p"


class Recorder:
    def __init__(self):
        self.logged, self.finished = [], None

    def log(self, stage, scalars, step):
        self.logged.append((stage, step, scalars))

    def finish(self, failed):
        self.finished = failed


def test_a_resumed_or_rewound_stage_logs_each_step_once(tmp_path):
    recorder = Recorder()
    trackers = Trackers([recorder])
    path = tmp_path / "m.jsonl"
    log_steps(trackers, "s1", [1, 2, 3], path=path)
    log_steps(trackers, "s1", [3, 4], resume_step=2, path=path)   # rewound to step 2, steps 3.. again
    assert [step for _, step, _ in recorder.logged] == [1, 2, 3, 4]
    fresh = Recorder()   # a later `run` of the same run dir: its stage resumes at its checkpoint
    log_steps(Trackers([fresh]), "s1", [2, 3, 4, 5], resume_step=3, path=path)
    assert [step for _, step, _ in fresh.logged] == [4, 5]
    assert fresh.logged[0][2] == {"loss": 0.25}


def test_a_failing_tracker_is_dropped_and_the_stage_goes_on(tmp_path):
    class Broken(Recorder):
        def log(self, stage, scalars, step):
            raise ConnectionError("no network")

    ok, broken = Recorder(), Broken()
    trackers = Trackers([broken, ok])
    log_steps(trackers, "s1", [1, 2], path=tmp_path / "m.jsonl")
    trackers.finish(failed=False)
    assert len(ok.logged) == 2 and ok.finished is False and broken.finished is None


def test_stage_context_feeds_the_trackers(tmp_path):
    from orchestrator.run_dir import RunDir
    from orchestrator.stages.context import StageContext

    recorder, pipeline = Recorder(), spec()
    ctx = StageContext(pipeline, RunDir(tmp_path, "p"), pipeline.stages[0], trackers=Trackers([recorder]))
    try:
        ctx.metrics.log({"step": 1, "loss": 2.0}, step=1)
    finally:
        ctx.close()
    assert recorder.logged == [("s1", 1, {"loss": 2.0})]


def test_tracker_section_errors_name_the_field_and_line():
    [msg] = problems("trackers:\n  wandb: {projcet: r1}\n")
    assert msg.startswith("p.yaml:") and "trackers.wandb.projcet: unknown key" in msg
    assert int(msg.split(":")[1]) == len(GOOD.splitlines()) + 2
    [msg] = problems("trackers:\n  wandb: {mode: cloud}\n")
    assert "trackers.wandb.mode" in msg and "offline" in msg
    [msg] = problems("trackers:\n  neptune: {}\n")
    assert "trackers.neptune: unknown key" in msg


@pytest.mark.parametrize("module, section, install", [
    ("wandb", "wandb: {mode: offline}", "pip install wandb==0.31.0"),
    ("mlflow", "mlflow: {}", "pip install mlflow-skinny==3.18.0"),
    ("sqlalchemy", "mlflow: {tracking_uri: 'sqlite:///x.db'}", "pip install sqlalchemy==2.1.9"),
])
def test_a_chosen_tracker_that_is_not_installed_fails_validation(monkeypatch, module, section, install):
    monkeypatch.setitem(sys.modules, module, None)   # `import module` now fails, as when it is not installed
    [msg] = problems(f"trackers:\n  {section}\n")
    assert f"trackers.{section.split(':')[0]}" in msg and f"{module} is not installed" in msg and install in msg


def test_without_trackers_nothing_needs_them(monkeypatch, tmp_path):
    for module in ("wandb", "mlflow"):
        monkeypatch.setitem(sys.modules, module, None)
    trackers = open_trackers(spec("trackers:\n  wandb: {mode: disabled}\n"), tmp_path)
    log_steps(trackers, "s1", [1], path=tmp_path / "m.jsonl")
    trackers.finish(failed=False)
    assert open_trackers(spec(), tmp_path).trackers == [] and not (tmp_path / "wandb").exists()

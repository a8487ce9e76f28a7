"""`python -m orchestrator submit`: the job request it builds (entrypoint, runtime env, metadata); no cluster here
(tests/e2e/test_multinode.py submits one)."""

from __future__ import annotations

import shlex

import pytest

from orchestrator.__main__ import main
from orchestrator.submit import SubmitError, job_request, parse_runtime_env
from tests.conftest import ROOT


def test_request_runs_the_pipeline_from_the_uploaded_copy_and_names_it_in_the_metadata(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    req = job_request("pipelines/smoke.yaml", "smoke", str(tmp_path / "run dir"), ".",
                      {"env_vars": {"HF_HOME": "/shared/hf"}})
    assert shlex.split(req["entrypoint"]) == ["python", "-m", "orchestrator", "run", "pipelines/smoke.yaml",
                                              "--run-dir", str(tmp_path / "run dir")]
    assert req["metadata"] == {"pipeline": "smoke", "run_dir": str(tmp_path / "run dir"),
                               "pipeline_file": "pipelines/smoke.yaml"}
    env = req["runtime_env"]
    assert env["working_dir"] == str(ROOT) and ".venv/" in env["excludes"] and env["env_vars"]["HF_HOME"]


def test_a_relative_run_dir_becomes_absolute_and_is_not_uploaded(monkeypatch):
    monkeypatch.chdir(ROOT)
    req = job_request(str(ROOT / "pipelines" / "smoke.yaml"), "smoke", "out/r1", str(ROOT))
    assert req["metadata"]["run_dir"] == str(ROOT / "out" / "r1")
    assert "/out/r1/" in req["runtime_env"]["excludes"]


def test_refuses_a_pipeline_outside_the_working_dir_and_bad_runtime_env(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SubmitError, match="not inside the working directory"):
        job_request(str(ROOT / "pipelines" / "smoke.yaml"), "smoke", "/runs/x", str(tmp_path))
    with pytest.raises(SubmitError, match="not JSON"):
        parse_runtime_env("{env_vars")
    with pytest.raises(SubmitError, match="JSON object"):
        parse_runtime_env("[1]")
    # Through the CLI: exit 2 before anything is sent.
    assert main(["submit", "pipelines/smoke.yaml", "--run-dir", "/runs/x", "--working-dir", str(tmp_path)]) == 2
    assert "not inside the working directory" in capsys.readouterr().err


def test_a_job_driver_keeps_the_jobs_runtime_env_whatever_address_it_is_given(monkeypatch):
    """Inside a Ray job (the supervisor sets RAY_JOB_CONFIG_JSON_ENV_VAR, not RAY_JOB_ID) the driver must not ship
    a working_dir of its own: ray.init refuses it as a conflict with the job's (`run --address auto` failed)."""
    from orchestrator import cluster
    from orchestrator.config import ClusterSpec

    calls = []
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster.ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(cluster.ray, "cluster_resources", lambda: {})
    monkeypatch.setattr(cluster.ray, "shutdown", lambda: None)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.2:6379")
    monkeypatch.delenv("RAY_JOB_ID", raising=False)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}')
    with cluster.connect("auto", ClusterSpec()):
        pass
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    with cluster.connect("auto", ClusterSpec()):   # from a shell: the project goes up as the working dir
        pass
    assert calls[0]["runtime_env"] is None
    assert calls[1]["runtime_env"]["working_dir"] == str(ROOT)

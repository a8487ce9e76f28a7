"""An actor's output, native writes included, lands in the log file the driver names for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from actors.actor_log import ACTOR_LOG_ENV
from orchestrator.cluster import ActorNames

ROOT = Path(__file__).resolve().parents[2]
_CHILD = """
import os, sys
from actors.actor_log import send_output_to_stage_log
print("before", flush=True)
where = send_output_to_stage_log()
print("python stdout")
print("python stderr", file=sys.stderr)
os.write(1, b"fd 1 write\\n")   # what vLLM's and torch's C++ code do
os.write(2, b"fd 2 write\\n")
sys.stdout.flush()
os.write(1, f"returned {where}\\n".encode())
"""


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **env})


def test_python_and_native_output_go_to_the_named_file(tmp_path: Path) -> None:
    log = tmp_path / "stage" / "logs" / "rollout-0.log"
    child = _run({ACTOR_LOG_ENV: str(log)})
    assert child.returncode == 0, child.stderr
    assert child.stdout == "before\n" and child.stderr == ""
    text = log.read_text()
    for line in ("python stdout", "python stderr", "fd 1 write", "fd 2 write", f"returned {log}"):
        assert line in text, text


def test_without_a_file_or_with_an_unwritable_one_output_stays(tmp_path: Path) -> None:
    plain = _run({})
    assert "fd 1 write" in plain.stdout and "returned None" in plain.stdout
    blocked = tmp_path / "file"
    blocked.write_text("")
    unwritable = _run({ACTOR_LOG_ENV: str(blocked / "logs" / "x.log")})  # a parent that is a file
    assert "fd 2 write" in unwritable.stderr and "returned None" in unwritable.stdout


def test_each_actor_and_each_replacement_gets_its_own_file(tmp_path: Path) -> None:
    names = ActorNames("r1ray.p.0", "p/rl", log_dir=tmp_path)
    first, replacement = names.options("rollout", 1, 0), names.options("rollout", 1, 1)
    assert first["name"] == "p/rl/rollout-1" and replacement["name"] == "p/rl/rollout-1.1"
    assert first["runtime_env"]["env_vars"][ACTOR_LOG_ENV] == str(tmp_path / "rollout-1.log")
    assert replacement["runtime_env"]["env_vars"][ACTOR_LOG_ENV] == str(tmp_path / "rollout-1.1.log")
    assert "runtime_env" not in ActorNames("r1ray.p.0", "p/rl").options("rollout", 1, 0)  # --verbose

"""Where an actor's output goes: the stage's log file, not the driver's console.

vLLM, DeepSpeed, torch's C++ runtime and Python's warnings all write to the process's stdout and stderr, some
from native code, so redirecting Python's logging would miss half of it. The driver names a file for each
actor in the ``R1RAY_ACTOR_LOG`` environment variable (orchestrator/cluster.py, ``spawn_group``); the actor
points file descriptors 1 and 2 at it as the first thing it does. Without the variable (``--verbose``) the
output stays with Ray, which forwards it to the driver's console.
"""

from __future__ import annotations

import os
import sys

ACTOR_LOG_ENV = "R1RAY_ACTOR_LOG"


def send_output_to_stage_log(path: str | None = None) -> str | None:
    """Append this process's stdout and stderr to ``path`` (default: the file named by ``R1RAY_ACTOR_LOG``); the
    path, or None where there is none or it cannot be opened (then the output stays where it went, and the
    run-dir check that follows every spawn says why the run directory is not there). A later stage that takes
    the actor over calls this again with its own file."""
    path = path or os.environ.get(ACTOR_LOG_ENV)
    if not path:
        return None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return path

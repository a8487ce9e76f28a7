"""``python -m orchestrator submit``: a pipeline as a Ray job whose metadata names the pipeline and its run dir.

Ray fixes a job's metadata when the job is submitted; the driver cannot add to it later. So this submits the
entrypoint a user would give `ray job submit` (``python -m orchestrator run PIPELINE --run-dir DIR``) through
``JobSubmissionClient.submit_job`` with ``metadata`` set: ``ray job list``, the dashboard's Jobs page and
``JobSubmissionClient.get_job_info(id).metadata`` then say which pipeline a job runs and where its run dir is.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import time
from pathlib import Path

from orchestrator.cluster import UPLOAD_EXCLUDES


class SubmitError(ValueError):
    """The request cannot be built (a path outside the working dir, bad runtime-env JSON)."""


def job_request(pipeline_file: str, pipeline_name: str, run_dir: str, working_dir: str = ".",
                runtime_env: dict | None = None) -> dict:
    """``submit_job`` keyword arguments: the entrypoint (run from the uploaded copy of ``working_dir``), the
    runtime env (``working_dir`` and the upload excludes, then ``runtime_env`` on top) and the metadata."""
    work = Path(working_dir).resolve()
    try:
        relative = Path(pipeline_file).resolve().relative_to(work)
    except ValueError:
        raise SubmitError(f"{pipeline_file} is not inside the working directory {work}: the job runs from an "
                          "uploaded copy of that directory, so the pipeline file must be in it (or pass "
                          "--working-dir)") from None
    # The run dir as an absolute path, not resolved: it names a filesystem every node mounts, which on this
    # machine may be a symlink the cluster's nodes see differently.
    run_dir = os.path.abspath(run_dir)
    excludes = list(UPLOAD_EXCLUDES)
    if Path(run_dir).resolve().is_relative_to(work):   # never upload the run's own checkpoints with the code
        excludes.append("/" + str(Path(run_dir).resolve().relative_to(work)) + "/")
    env = {"working_dir": str(work), "excludes": excludes, **(runtime_env or {})}
    return {
        "entrypoint": shlex.join(["python", "-m", "orchestrator", "run", relative.as_posix(), "--run-dir", run_dir]),
        "runtime_env": env,
        "metadata": {"pipeline": pipeline_name, "run_dir": run_dir, "pipeline_file": relative.as_posix()},
    }


def parse_runtime_env(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        env = json.loads(text)
    except json.JSONDecodeError as e:
        raise SubmitError(f"--runtime-env-json is not JSON: {e}") from None
    if not isinstance(env, dict):
        raise SubmitError("--runtime-env-json must be a JSON object")
    return env


def submit(request: dict, address: str | None, submission_id: str | None = None, wait: bool = True) -> int:
    """Submit the job; with ``wait``, print its logs until it ends. 0 when it succeeded (or was submitted without
    waiting), 1 when it failed or was stopped."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    if address:   # Ray's client lets these override the address it is given; here the flag wins
        for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            os.environ.pop(var, None)
    client = JobSubmissionClient(address)
    job_id = client.submit_job(submission_id=submission_id, **request)
    meta = request["metadata"]
    print(f"Submitted job {job_id}: pipeline {meta['pipeline']}, run dir {meta['run_dir']}", flush=True)
    if not wait:
        print(f"Follow it with: ray job logs --follow {job_id}   (stop it: ray job stop {job_id})")
        return 0
    try:
        asyncio.run(_print_logs(client, job_id))
    except KeyboardInterrupt:
        print(f"\nStopped following; the job goes on. Stop it with: ray job stop {job_id}", file=sys.stderr)
        return 130
    status = client.get_job_status(job_id)
    while not status.is_terminal():   # the log stream can close a moment before the status turns
        time.sleep(1)
        status = client.get_job_status(job_id)
    print(f"Job {job_id} {status.value}")
    return 0 if status == JobStatus.SUCCEEDED else 1


async def _print_logs(client, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)

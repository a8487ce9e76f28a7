"""Stopping only what a test started. `ray stop` ends every Ray of this user on the machine, a user's running
cluster or another job's embedded Ray included, so tests never call it: they stop the processes whose command line
names their own temp dir (a Ray head's or node's `--temp-dir`, an embedded Ray's RAY_TMPDIR), with everything
those started (raylet workers, job drivers, vLLM and reward helpers)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil


def processes_under(marker: str) -> list[psutil.Process]:
    """Processes whose command line or environment (RAY_TMPDIR) contains ``marker``, and all their descendants
    (this process excluded). The environment matters: Ray's agents retitle themselves (``ray::DashboardAgent``),
    and once their raylet is gone they are nobody's children."""
    roots = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid == os.getpid():
                continue
            if any(marker in arg for arg in proc.info["cmdline"] or ()) or marker in _environ(proc.pid):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    found: dict[int, psutil.Process] = {}
    for root in roots:
        try:
            for p in [root, *root.children(recursive=True)]:
                found[p.pid] = p
        except psutil.NoSuchProcess:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def _environ(pid: int) -> str:
    # Read directly: psutil parses it as empty for processes that retitled themselves (setproctitle moves the area).
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n").decode(errors="replace")
    except OSError:
        return ""


def stop_processes_under(marker: str, grace_s: float = 10.0) -> int:
    """SIGTERM what ``processes_under(marker)`` finds, SIGKILL what is left after ``grace_s``; returns the count."""
    procs = processes_under(marker)
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    time.sleep(0.5)  # let the kernel reap before a caller checks ports or files
    return len(procs)

"""Stopping only what a test started. `ray stop` ends every Ray of this user on the machine, a user's running
cluster or another job's embedded Ray included, so tests never call it: they stop the processes whose command line
names their own temp dir (a Ray head's or node's `--temp-dir`, an embedded Ray's RAY_TMPDIR), with everything
those started (raylet workers, job drivers, vLLM and reward helpers)."""

from __future__ import annotations

import os
import signal
import time

import psutil


def processes_under(marker: str) -> list[psutil.Process]:
    """Processes whose command line contains ``marker``, and all their descendants (this process excluded)."""
    roots = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid != os.getpid() and any(marker in arg for arg in proc.info["cmdline"] or ()):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
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

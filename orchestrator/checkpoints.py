"""A stage's resumable checkpoints: ``RUN_DIR/<stage>/checkpoints/step-N/``, written atomically.

```
checkpoints/step-N/state.json        the driver's side: fingerprint, step, the stage's own progress (data position,
                                     policy version, early stopping, dev curve); written last
checkpoints/step-N/trainer/          PolicyTrainer.save_state: DeepSpeed weights, optimizer and scheduler state per
                                     rank, and every rank's RNG state
checkpoints/step-N/rollout-K.pt      RolloutWorker K's RNG state (vLLM samples from it on CPU)
```

Atomicity: everything is written into ``step-N.tmp/`` and the directory is renamed to ``step-N`` only after every
part is on disk (a rename within one directory is atomic on POSIX filesystems, NFS included). A kill during a write
leaves a ``.tmp`` directory, which is never read and is removed at the next start; the previous checkpoint is
untouched until the new one is whole, and only then do the oldest beyond ``keep_last`` go.

A checkpoint belongs to one stage configuration: ``state.json`` carries the stage's fingerprint, and one written
under another fingerprint is not resumed from (the stage starts over and the stale directory goes).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    state: dict
    """The stage's own progress, as it was handed to ``commit``."""


class StageCheckpoints:
    """Where and when one stage run writes its checkpoints, and which one it resumes from. ``on_commit(seconds)``
    is told how long each checkpoint took, begin to commit (the stage's Prometheus histogram)."""

    def __init__(self, root: Path, fingerprint: str, every_steps: int | None, every_s: float | None,
                 keep_last: int, on_commit: Callable[[float], None] | None = None):
        self.root, self.fingerprint, self.on_commit = root, fingerprint, on_commit
        self.every_steps, self.every_s, self.keep_last = every_steps, every_s, keep_last
        self._last_time = time.monotonic()
        self._begun = 0.0
        self.written, self.seconds, self.last_bytes = 0, 0.0, 0
        """Checkpoints this run wrote, the seconds they took (begin to commit) and the last one's size."""

    # ------------------------------------------------------------------ reading
    def complete(self) -> list[Checkpoint]:
        """Whole checkpoints of this fingerprint, oldest first."""
        out = []
        for path in self.root.glob("step-*"):
            m = _STEP_DIR.match(path.name)
            if not m or not path.is_dir():
                continue
            try:
                meta = json.loads((path / "state.json").read_text())
            except (OSError, ValueError):
                continue   # renamed only once whole, so this is a directory someone else left: skip it
            if meta.get("fingerprint") == self.fingerprint and meta.get("step") == int(m.group(1)):
                out.append(Checkpoint(int(m.group(1)), path, meta["state"]))
        return sorted(out, key=lambda c: c.step)

    def latest(self) -> Checkpoint | None:
        found = self.complete()
        return found[-1] if found else None

    def discard_others(self, keep: Checkpoint | None) -> None:
        """Remove partial writes, and every checkpoint but ``keep`` when starting from it (None: all of them)."""
        if not self.root.exists():
            return
        for path in self.root.iterdir():
            if keep is None or path != keep.path:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing
    def due(self, step: int) -> bool:
        """Whether step ``step`` (just finished) should be checkpointed: every ``every_steps`` steps, or when
        ``every_s`` seconds have passed since the last checkpoint (or the stage's start)."""
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(self.every_s) and time.monotonic() - self._last_time >= self.every_s

    def begin(self, step: int) -> Path:
        """An empty directory to write checkpoint ``step`` into; nothing reads it until ``commit``."""
        tmp = self.root / f"step-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self._begun = time.perf_counter()
        return tmp

    def commit(self, tmp: Path, step: int, state: dict) -> Checkpoint:
        """Write ``state.json`` last, make every file durable, publish the directory under its final name, then
        drop the oldest checkpoints beyond ``keep_last``."""
        meta = {"fingerprint": self.fingerprint, "step": step, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "state": state}
        (tmp / "state.json").write_text(json.dumps(meta))
        self.last_bytes = _fsync_tree(tmp)
        final = self.root / f"step-{step}"
        if final.exists():   # a step re-run after a trainer restart: the new one replaces it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(self.root)
        self._last_time = time.monotonic()
        for old in self.complete()[: -self.keep_last]:
            shutil.rmtree(old.path, ignore_errors=True)
        seconds = time.perf_counter() - self._begun
        self.written += 1
        self.seconds += seconds
        log.info("checkpoint %s (%.1f MB) in %.2f s", final, self.last_bytes / 2**20, seconds)
        if self.on_commit is not None:
            self.on_commit(seconds)
        return Checkpoint(step, final, state)

    def report(self, resumed_from: Checkpoint | None) -> dict:
        """For the stage's metrics: what this run wrote and where it started."""
        return {"written": self.written, "seconds": round(self.seconds, 3),
                "last_mb": round(self.last_bytes / 2**20, 2),
                "resumed_from_step": resumed_from.step if resumed_from else None}


def _fsync_tree(root: Path) -> int:
    """fsync every file and directory under ``root``; returns the bytes of its files."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                total += os.fstat(fd).st_size
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))
    return total


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

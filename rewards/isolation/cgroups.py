"""Per-run cgroups: a process-count and a memory limit around one sandboxed program.

Why: sandboxes run as (namespaced) root here, and the kernel never applies RLIMIT_NPROC to uid 0, so only a
pids cgroup stops a fork bomb; the memory cgroup also bounds what rlimits cannot (many processes, tmpfs
pages). Groups are created under this process's own cgroup, so any limit around the caller (a test's outer
guard, a container) still applies on top. The program joins its group before it starts: the launcher is
`sh -c 'echo $$ > …/cgroup.procs; exec bwrap …'`, so not one instruction of it runs outside the group.

Supports cgroup v1 (`pids` and `memory` hierarchies) and v2 (a delegated subtree with both controllers).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "r1ray-sbx"


@dataclass(slots=True)
class RunGroup:
    """The cgroup directories (one per controller on v1, one on v2) that hold one run."""

    dirs: list[Path]
    version: int

    def join_command(self) -> str:
        return " && ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in self.dirs)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            try:
                found |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        return found

    def kill_all(self, attempts: int = 50) -> bool:
        """SIGKILL everything in the group until it is empty; True when it is."""
        for _ in range(attempts):
            pids = self.pids()
            if not pids:
                return True
            if self.version == 2 and (self.dirs[0] / "cgroup.kill").exists():
                _write(self.dirs[0] / "cgroup.kill", "1")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)
        return not self.pids()

    def memory_exhausted(self) -> bool:
        for d in self.dirs:
            for name, pattern in (("memory.events", r"oom_kill (\d+)"), ("memory.oom_control", r"oom_kill (\d+)")):
                try:
                    m = re.search(pattern, (d / name).read_text())
                except OSError:
                    continue
                if m and int(m.group(1)) > 0:
                    return True
            try:
                if int((d / "memory.failcnt").read_text()) > 0:
                    return True
            except (OSError, ValueError):
                pass
        return False

    def remove(self) -> None:
        self.kill_all()
        for d in self.dirs:
            for _ in range(100):  # a just-killed process may take a moment to leave
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


@dataclass(slots=True)
class CgroupParents:
    """Where this process may create child groups."""

    dirs: list[Path]
    version: int
    _counter: "itertools.count[int]" = field(default_factory=itertools.count)

    @classmethod
    def detect(cls) -> "CgroupParents | None":
        """The writable parents for pids+memory groups, or None when cgroups cannot be used here."""
        try:
            own = _own_cgroups()
            mounts = _cgroup_mounts()
        except OSError:
            return None
        v1 = [mounts.get(c) for c in ("pids", "memory")]
        if all(v1) and all(c in own for c in ("pids", "memory")):
            dirs = [Path(v1[0]) / own["pids"].lstrip("/"), Path(v1[1]) / own["memory"].lstrip("/")]  # type: ignore[arg-type]
            parents = cls(dirs, 1)
        elif "" in mounts and "" in own:
            parents = cls([Path(mounts[""]) / own[""].lstrip("/")], 2)
        else:
            return None
        return parents if parents._usable() else None

    def _usable(self) -> bool:
        try:
            group = self.create(pids_max=8, memory_bytes=64 << 20)
        except OSError:
            return False
        group.remove()
        return True

    def create(self, pids_max: int, memory_bytes: int) -> RunGroup:
        name = f"{PREFIX}-{os.getpid()}-{next(self._counter)}-{secrets.token_hex(3)}"
        dirs = [d / name for d in self.dirs]
        group = RunGroup(dirs, self.version)
        try:
            for d in dirs:
                d.mkdir()
            if self.version == 1:
                _write(dirs[0] / "pids.max", str(pids_max))
                _write(dirs[1] / "memory.limit_in_bytes", str(memory_bytes))
                if (dirs[1] / "memory.memsw.limit_in_bytes").exists():
                    _write(dirs[1] / "memory.memsw.limit_in_bytes", str(memory_bytes))  # no swapping out of it
            else:
                _write(dirs[0] / "pids.max", str(pids_max))
                _write(dirs[0] / "memory.max", str(memory_bytes))
                if (dirs[0] / "memory.swap.max").exists():
                    _write(dirs[0] / "memory.swap.max", "0")
        except OSError:
            group.remove()
            raise
        return group

    def sweep_stale(self) -> None:
        """Remove groups left by processes that died mid-run (a killed pool worker cannot clean up)."""
        for parent in self.dirs:
            try:
                children = list(parent.glob(f"{PREFIX}-*"))
            except OSError:
                continue
            for child in children:
                m = re.match(rf"{PREFIX}-(\d+)-", child.name)
                if m and not _alive(int(m.group(1))):
                    RunGroup([child], self.version).remove()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _own_cgroups() -> dict[str, str]:
    """controller -> path of this process (v2 under the key "")."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            own[c] = path
    return own


def _cgroup_mounts() -> dict[str, str]:
    """controller -> mount point for v1 hierarchies; "" -> mount point of the v2 hierarchy."""
    mounts: dict[str, str] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(rfields) < 3:
            continue
        fstype, options, mount_point = rfields[0], rfields[2], fields[4]
        if fstype == "cgroup":
            for opt in options.split(","):
                if opt in ("pids", "memory"):
                    mounts[opt] = mount_point
        elif fstype == "cgroup2":
            mounts.setdefault("", mount_point)
    return mounts

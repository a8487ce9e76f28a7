"""Helper processes that speak length-prefixed pickle frames over their stdin/stdout pipes.

Used for the trusted helpers (reward pool workers, the math checker); never for sandboxed model code, whose
output is parsed as bounded JSON instead. Children are started with `subprocess` (fork+exec), not
`multiprocessing`: it is safe from multi-threaded parents such as Ray actors, does not re-import the
parent's `__main__`, and every child gets its own process group so one `killpg` ends it and its
descendants.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from typing import Any

import psutil

_HEADER = struct.Struct("!Q")
MAX_FRAME_BYTES = 512 * 1024 * 1024


def write_frame(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def read_frame(fd: int, deadline: float | None = None) -> Any:
    """Read one frame; raises TimeoutError past `deadline` (a time.monotonic value), EOFError on a closed pipe."""
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > MAX_FRAME_BYTES:
        raise EOFError(f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES} byte limit")
    return pickle.loads(_read_exact(fd, size, deadline))


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    while n > 0:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no answer before the deadline")
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("the helper process closed its pipe")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def child_pipes() -> tuple[int, int]:
    """In a helper child: take the frame pipes off fds 0/1 so stray prints cannot corrupt the frames."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # print() from reward plugins goes to stderr
    os.close(devnull)
    sys.stdout = sys.stderr
    return in_fd, out_fd


def kill_tree(pid: int) -> None:
    """SIGKILL a process, everything descended from it, and its process group."""
    try:
        victims = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        victims = []
    for victim in [pid, *(v.pid for v in victims)]:
        try:
            os.kill(victim, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Child:
    """A `python -m MODULE` helper in its own process group, with frame I/O and a tree kill."""

    def __init__(self, module: str, env: dict[str, str] | None = None) -> None:
        child_env = dict(os.environ)
        # The child must import what the parent can (the project, dotted-path plugins).
        child_env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        child_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
            env=child_env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.in_fd = self.proc.stdout.fileno()
        self.out_fd = self.proc.stdin.fileno()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fileno(self) -> int:
        return self.in_fd

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, obj: Any) -> None:
        write_frame(self.out_fd, obj)

    def recv(self, deadline: float | None = None) -> Any:
        return read_frame(self.in_fd, deadline)

    def kill(self) -> None:
        """SIGKILL the helper, its process group and every descendant (sandboxes start their own sessions)."""
        kill_tree(self.proc.pid)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass

    def close(self, grace_s: float = 1.0) -> None:
        """Ask politely (EOF on stdin), then kill."""
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=grace_s)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

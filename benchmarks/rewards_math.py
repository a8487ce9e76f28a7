"""Our `math` reward against Math-Verify on the same labelled grading cases, in one run.

    python benchmarks/rewards_math.py [--cases tests/unit/data/rewards/math_cases.jsonl] [--repeat 3]

Reports, for both graders: accuracy against the labels, agreement with each other, and throughput
(cases/s, one process, caches off) on the ordinary cases; the pathological cases (tag `hostile`) are timed
separately because both graders spend them waiting on timeouts. Needs the dev-only `math-verify` package.
Prints a Markdown table ready for benchmarks/RESULTS.md and the cases where the graders disagree.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from rewards.math import MathReward

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASES = ROOT / "tests" / "unit" / "data" / "rewards" / "math_cases.jsonl"


def math_verify_grader(timeout_s: int) -> Callable[[dict[str, Any]], float]:
    from math_verify import parse, verify

    def grade(case: dict[str, Any]) -> float:
        gold = case["answer"]
        # Math-Verify's README: give the gold in LaTeX form so its extractor finds it.
        if "$" not in gold and "\\boxed" not in gold:
            gold = f"${gold}$"
        try:
            ok = verify(parse(gold, parsing_timeout=timeout_s), parse(case["completion"], parsing_timeout=timeout_s),
                        timeout_seconds=timeout_s)
        except Exception:
            ok = False
        return float(ok)

    return grade


def ours_grader(timeout_s: float) -> tuple[Callable[[dict[str, Any]], float], MathReward]:
    reward = MathReward(timeout_s=timeout_s, cache_size=0)
    return (lambda case: reward(case["completion"], case).score), reward


def run(grade: Callable[[dict[str, Any]], float], cases: list[dict[str, Any]], repeat: int) -> tuple[list[float], float]:
    scores: list[float] = []
    start = time.perf_counter()
    for r in range(repeat):
        batch = [grade(c) for c in cases]
        if r == 0:
            scores = batch
    return scores, (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    parser.add_argument("--repeat", type=int, default=3, help="passes over the ordinary cases for timing")
    parser.add_argument("--timeout-s", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # Math-Verify logs every failed parse

    cases = [json.loads(line) for line in args.cases.read_text().splitlines() if line.strip()]
    ordinary = [c for c in cases if c["tag"] != "hostile"]
    hostile = [c for c in cases if c["tag"] == "hostile"]
    ours, reward = ours_grader(args.timeout_s)
    theirs = math_verify_grader(args.timeout_s)
    for grade in (ours, theirs):  # warm-up: imports, helper process start
        grade(ordinary[0])

    rows = []
    results: dict[str, list[float]] = {}
    for name, grade in (("r1ray math", ours), ("math-verify 0.9.0", theirs)):
        scores, seconds = run(grade, ordinary, args.repeat)
        h_scores, h_seconds = run(grade, hostile, 1)
        results[name] = scores + h_scores
        labels = [c["expected"] for c in ordinary + hostile]
        correct = sum(s == lab for s, lab in zip(results[name], labels))
        rows.append((name, correct, len(labels), len(ordinary) / seconds, h_seconds))
    reward.close()

    a, b = results["r1ray math"], results["math-verify 0.9.0"]
    agree = sum(x == y for x, y in zip(a, b))
    print(f"cases: {len(cases)} ({len(ordinary)} ordinary, {len(hostile)} pathological); repeat={args.repeat}\n")
    print("| grader | accuracy vs labels | ordinary cases/s | pathological cases, total s |")
    print("|---|---|---|---|")
    for name, correct, n, rate, h_seconds in rows:
        print(f"| {name} | {correct}/{n} ({100 * correct / n:.1f}%) | {rate:.1f} | {h_seconds:.1f} |")
    print(f"\nagreement between the graders: {agree}/{len(a)} ({100 * agree / len(a):.1f}%)\n")
    print("disagreements (id, label, ours, math-verify, note):")
    for case, x, y in zip(ordinary + hostile, a, b):
        if x != y:
            print(f"  {case['id']}  label={case['expected']}  ours={x:g}  mv={y:g}  {case['source']}")


if __name__ == "__main__":
    main()

"""The `code` reward's cost in one RL step: 16 prompts x 8 samples of the synthetic code task, scored in one call.

    PYTHONPATH=. python benchmarks/code_reward_step.py [--prompts 16] [--n 8] [--procs 1 2] [--repeat 3]

A RewardPool (what RewardWorker.score runs) with make run's reward list for a mixed step (code, format,
language) scores a batch the way an RL step does: each prompt's n completions are a mix of its reference
program (passes), another problem's program (fails its tests) and an answer with no code block, in the shares
a half-trained policy might produce (`--mix`). Reported per test convention and for the default mix of
conventions: the batch's wall seconds (median of `--repeat`, after one warm-up batch that starts the
sandboxes), per completion, and the share of an RL step of `--step-s` seconds (make run's RL step without
code; see RESULTS.md) that the scoring would add: reward / (step + reward).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from orchestrator.data.code import CONVENTIONS, make_code_split
from rewards.config import RewardSpec
from rewards.isolation.pool import RewardPool


def completion(program: str | None) -> str:
    if program is None:
        return "<think>\nplan\n</think>\n<answer>I do not know.</answer>"
    return f"<think>\nplan\n</think>\n<answer>\n```python\n{program}\n```\n</answer>"


def batch(rows: list[dict], n: int, mix: tuple[float, float], rng: random.Random) -> tuple[list[str], list[dict]]:
    """n completions per row: its reference program, a wrong program, or no code, in the shares of ``mix``."""
    completions, samples = [], []
    for i, row in enumerate(rows):
        other = rows[(i + 1) % len(rows)]["solution"]
        for _ in range(n):
            u = rng.random()
            program = row["solution"] if u < mix[0] else other if u < mix[0] + mix[1] else None
            completions.append(completion(program))
            samples.append(row)
    return completions, samples


def time_batch(pool: RewardPool, completions: list[str], samples: list[dict], repeat: int) -> tuple[float, float]:
    """(median seconds, mean code score)."""
    pool.score(completions, samples)  # warm-up: each process starts its sandbox
    seconds, scored = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        scored = pool.score(completions, samples)
        seconds.append(time.perf_counter() - start)
    assert not any(s.failed or s.timed_out for s in scored), [s.details for s in scored if s.failed][:2]
    return statistics.median(seconds), statistics.mean(s.components.get("code", 0.0) for s in scored)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mix", type=float, nargs=2, default=(0.4, 0.4), metavar=("CORRECT", "WRONG"),
                    help="shares of completions with the reference and with a wrong program; the rest have no code")
    ap.add_argument("--step-s", type=float, default=1.9, help="an RL step's seconds without the code reward")
    args = ap.parse_args()
    specs = [RewardSpec(name="code", domains=["code"]), RewardSpec(name="format", weight=0.1),
             RewardSpec(name="language", weight=0.1)]
    print(f"nproc {os.cpu_count()}, load {os.getloadavg()[0]:.1f}; {args.prompts} prompts x {args.n}; "
          f"mix correct/wrong/no code {args.mix[0]:.2f}/{args.mix[1]:.2f}/{1 - sum(args.mix):.2f}")
    print("| conventions | pool procs | batch s | ms per completion | code score mean | share of a "
          f"{args.step_s} s step |")
    print("|---|---:|---:|---:|---:|---:|")
    for procs in args.procs:
        pool = RewardPool(specs, num_procs=procs, deadline_s=60.0)
        try:
            for conventions in [(c,) for c in CONVENTIONS] + [CONVENTIONS]:
                rows = make_code_split("rl", args.prompts, seed=11, conventions=conventions)
                completions, samples = batch(rows, args.n, tuple(args.mix), random.Random(0))
                s, score = time_batch(pool, completions, samples, args.repeat)
                print(f"| {'+'.join(conventions) if len(conventions) < 4 else 'all (default)'} | {procs} | {s:.2f} "
                      f"| {1000 * s / len(completions):.1f} | {score:.2f} | {s / (args.step_s + s):.0%} |",
                      flush=True)
        finally:
            pool.close()


if __name__ == "__main__":
    main()

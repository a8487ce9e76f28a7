"""Where an RL step's time goes, from the per-step metrics an ``rl`` stage writes.

Every step of the ``rl`` stage records generate / reward / logprob / train / sync seconds and the remainder
(batch building, Ray round trips, metrics) as overhead. This prints their medians, means and shares over a
run's steps (the first step, which warms vLLM's and the trainer's caches, is reported apart).

    python -m orchestrator run pipelines/tiny_sft_rl.yaml --run-dir runs/tiny_sft_rl
    python benchmarks/rl_step_breakdown.py runs/tiny_sft_rl/reasoning_rl/metrics.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

PHASES = ["generate_s", "reward_s", "logprob_s", "train_s", "sync_s", "overhead_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics", type=Path, help="an rl stage's metrics.jsonl")
    args = p.parse_args()
    rows = [json.loads(line) for line in args.metrics.read_text().splitlines()]
    steps = [r for r in rows if "step_s" in r]
    if len(steps) < 2:
        raise SystemExit(f"{args.metrics}: need at least two RL steps, found {len(steps)}.")
    first, rest = steps[0], steps[1:]
    total = statistics.mean(r["step_s"] for r in rest)
    print(f"{args.metrics}: {len(steps)} steps; first step {first['step_s']:.2f} s "
          f"(generate {first['generate_s']:.2f} s: engine warm-up)\n")
    print("| phase | median s | mean s | share of mean step |")
    print("|---|---:|---:|---:|")
    for key in PHASES:
        values = [r[key] for r in rest]
        print(f"| {key[:-2]} | {statistics.median(values):.3f} | {statistics.mean(values):.3f} | "
              f"{statistics.mean(values) / total:.0%} |")
    print(f"| **step** | {statistics.median(r['step_s'] for r in rest):.3f} | {total:.3f} | 100% |")
    gen = statistics.median(r["generate_tokens_per_s"] for r in rest)
    train = statistics.median(r["train_tokens_per_s"] for r in rest)
    samples = statistics.median(r["groups"] for r in rest)
    print(f"\nmedian generation {gen:,.0f} tokens/s (response tokens), training {train:,.0f} tokens/s "
          f"(prompt + response), {samples:g} groups per step")


if __name__ == "__main__":
    main()

"""`make run`'s recipe over seeds: pass@1 per stage and per domain as mean ± std, and the run's wall time.

Each seed is the whole pipeline (pipelines/tiny_r1.yaml unless --pipeline names another) in a fresh driver
process with its own embedded Ray, one after the other, with every seed of the file set to it: the pipeline's
(evaluation and rejection sampling), each model's initialisation, the rollout engines' and each stage's trainer
(batch order, dropout-free but sampler and mini-batch order). The data stay the same problems: a synthetic
dataset's rows depend on its own seed, which this script leaves alone, so the band measures training noise,
not a different test set.

    PYTHONPATH=. python benchmarks/tiny_r1_band.py --out /tmp/band --seeds 0 1 2     # ~15 min a seed, idle machine
    PYTHONPATH=. python benchmarks/tiny_r1_band.py --out /tmp/band --report           # the table from the runs

Writes OUT/band.json (per seed: wall time and every stage's eval; the mean and std over seeds; the machine)
and prints a markdown table for benchmarks/RESULTS.md and the README. Run it on an idle machine: on two cores
a concurrent job slows every stage several times over, and the wall time is part of the result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.resume import machine

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "pipelines" / "tiny_r1.yaml"


def reseed(pipeline: dict, seed: int) -> dict:
    """``pipeline`` with every training-side seed set to ``seed`` (the datasets' seeds are kept)."""
    pipeline = dict(pipeline, seed=seed)
    pipeline["rollout"] = dict(pipeline.get("rollout") or {}, seed=seed)
    models = {}
    for name, model in (pipeline.get("models") or {}).items():
        if "init" in model:
            model = dict(model, init=dict(model["init"], seed=seed))
        models[name] = model
    pipeline["models"] = models
    stages = []
    for stage in pipeline["stages"]:
        if stage.get("kind") in ("sft", "rl"):
            stage = dict(stage, train=dict(stage.get("train") or {}, seed=seed))
        stages.append(stage)
    pipeline["stages"] = stages
    return pipeline


# The instruction-set pin of `make run` (Makefile CPU_PIN), so a band measured here is the band make run gives.
CPU_PIN = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def run_seed(recipe: dict, seed: int, out: Path) -> dict:
    run_dir = out / f"seed-{seed}"
    path = out / f"seed-{seed}.yaml"
    path.write_text(yaml.safe_dump(reseed(recipe, seed), sort_keys=False))
    t0 = time.perf_counter()
    env = {**(CPU_PIN if platform.machine() == "x86_64" else {}), **os.environ}
    with (out / f"seed-{seed}.log").open("w") as log:
        done = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(path), "--run-dir", str(run_dir),
                               "--no-dashboard"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    (run_dir / "band_wall_s.txt").write_text(f"{wall:.1f}\n")
    if done.returncode != 0:
        raise SystemExit(f"seed {seed} failed (exit {done.returncode}); see {out / f'seed-{seed}.log'}")
    return collect(run_dir)


def collect(run_dir: Path) -> dict:
    """One run's figures: wall time, and per stage with an eval its pass@1 and each domain's."""
    summary = json.loads((run_dir / "summary.json").read_text())
    wall = run_dir / "band_wall_s.txt"
    stages = {}
    for stage in summary["stages"]:
        ev = stage.get("eval")
        if not ev:
            continue
        stages[stage["name"]] = {"pass@1": ev["pass@1"], "temperature": ev.get("temperature", 0.0),
                                 "per_domain": {d: v["pass@1"] for d, v in ev.get("per_domain", {}).items()}}
    return {"status": summary["status"], "wall_s": float(wall.read_text()) if wall.exists() else None,
            "stage_seconds": {s["name"]: s.get("seconds") for s in summary["stages"]}, "stages": stages}


def band(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def aggregate(runs: dict[int, dict]) -> dict:
    first = next(iter(runs.values()))
    table: dict = {}
    for stage, ev in first["stages"].items():
        row = {"pass@1": band([r["stages"][stage]["pass@1"] for r in runs.values()])}
        for domain in ev["per_domain"]:
            row[domain] = band([r["stages"][stage]["per_domain"][domain] for r in runs.values()])
        table[stage] = row
    walls = [r["wall_s"] for r in runs.values() if r["wall_s"] is not None]
    return {"stages": table, "wall_s": band(walls) if walls else None}


def cpu_facts() -> dict:
    """What makes the same seed compute different numbers on another machine (README "Reproducibility")."""
    import torch

    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return {**machine(), "torch": torch.__version__, "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512": any(f.startswith("avx512") for f in flags), "amx": any(f.startswith("amx") for f in flags),
            "python": platform.python_version()}


def markdown(result: dict) -> str:
    stages = result["aggregate"]["stages"]
    domains = sorted({d for row in stages.values() for d in row if d != "pass@1"})
    lines = ["| stage | pass@1 | " + " | ".join(domains) + " |", "|---|---:|" + "---:|" * len(domains)]
    for stage, row in stages.items():
        cells = [f"{row[d]['mean']:.3f} ± {row[d]['std']:.3f}" if d in row else "–" for d in ["pass@1", *domains]]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    wall = result["aggregate"]["wall_s"]
    if wall:
        lines.append(f"\nwall {wall['mean'] / 60:.1f} ± {wall['std'] / 60:.1f} min over {wall['n']} seeds "
                     f"(min {wall['min'] / 60:.1f}, max {wall['max'] / 60:.1f})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pipeline", type=Path, default=RECIPE)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--report", action="store_true", help="only aggregate the runs already in OUT")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    recipe = yaml.safe_load(args.pipeline.read_text())
    runs = {}
    for seed in args.seeds:
        done = args.out / f"seed-{seed}" / "summary.json"
        if done.exists() and json.loads(done.read_text())["status"] == "succeeded":   # a finished seed is kept
            runs[seed] = collect(done.parent)
        elif not args.report:
            runs[seed] = run_seed(recipe, seed, args.out)
            print(f"seed {seed}: {runs[seed]['wall_s'] / 60:.1f} min", flush=True)
    if not runs:
        raise SystemExit(f"No finished runs in {args.out}.")
    result = {"pipeline": str(args.pipeline.relative_to(ROOT) if args.pipeline.is_relative_to(ROOT) else args.pipeline),
              "date": time.strftime("%Y-%m-%d"), "machine": cpu_facts(), "runs": runs, "aggregate": aggregate(runs)}
    (args.out / "band.json").write_text(json.dumps(result, indent=1))
    print(markdown(result))


if __name__ == "__main__":
    main()

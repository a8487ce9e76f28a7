"""Synchronous against asynchronous RL on `make run`'s reasoning-RL stage: steps/s, and reward per sample and per
wall-second, over seeds.

Every run starts from the same checkpoint: `make run`'s cold start (pipelines/tiny_r1.yaml's first stage, run once
into OUT/cold unless --checkpoint names one; --cold-steps N trains a fixed N steps instead). Then, for each seed, the reasoning_rl stage of tiny_r1.yaml as it is
(renamed `rl`), once synchronous and once with `async: {max_staleness: K}`, one after the other in this process's
turn; the trainer's and the engine's seeds are the seed. The dev eval of the stage is kept: it is the held-out
learning curve (its time is outside `step_s`).

    PYTHONPATH=. python benchmarks/async_rl.py --out /tmp/async_rl --cold-steps 600 --seeds 0 1 2
    PYTHONPATH=. python benchmarks/async_rl.py --out /tmp/async_rl --report   # table and figure from the runs

Writes OUT/async_rl.json (per run: median step_s over steps 3.., steps/s, reward and pass-rate curves, dev pass@1)
and benchmarks/figures/async_rl.png (reward per step and per wall-second, mean and range over seeds).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.resume import machine

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "pipelines" / "tiny_r1.yaml"
FIGURE = ROOT / "benchmarks" / "figures" / "async_rl.png"


def _run(pipeline: dict, run_dir: Path) -> float:
    """Run ``pipeline`` into ``run_dir`` in a fresh driver process (its own embedded Ray); returns its wall time."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    t0 = time.perf_counter()
    with (run_dir.with_suffix(".log")).open("w") as log:
        subprocess.run([sys.executable, "-m", "orchestrator", "run", str(path), "--run-dir", str(run_dir),
                        "--no-dashboard"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def cold_start(out: Path, steps: int | None) -> Path:
    """tiny_r1's cold start; ``steps``: a fixed number of steps on one cosine decay instead of its early stopping
    (a shorter, less trained start: RL from it still has much to gain)."""
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["stages"] = [s for s in recipe["stages"] if s["name"] == "cold_start"]
    if steps is not None:
        [stage] = recipe["stages"]
        stage.pop("early_stopping")
        stage["train"].pop("epochs")
        stage["train"]["steps"] = steps
        stage["train"]["optim"]["decay_steps"] = steps
    _run(recipe, out / "cold")
    return out / "cold" / "cold_start" / "checkpoint"


def rl_pipeline(checkpoint: Path, seed: int, staleness: int | None, steps: int | None, threads: int | None) -> dict:
    recipe = yaml.safe_load(RECIPE.read_text())
    [stage] = [copy.deepcopy(s) for s in recipe["stages"] if s["name"] == "reasoning_rl"]
    stage.update(name="rl", model="cold")
    stage.pop("checkpoint_every", None)
    stage.pop("eval", None)
    stage["train"]["seed"] = seed
    if steps is not None:
        stage["steps"] = steps
        stage["dev_eval"]["every_steps"] = max(1, steps // 2)
    if staleness is not None:
        stage["async"] = {"max_staleness": staleness}
    cluster = recipe["cluster"]
    if threads is not None:
        cluster["trainer"]["threads"] = cluster["rollout"]["threads"] = threads
    return {"name": f"async_rl_{seed}", "seed": seed, "cluster": cluster,
            "rollout": {**recipe["rollout"], "seed": seed},
            "datasets": {k: recipe["datasets"][k] for k in ("arith_rl", "arith_dev")},
            "models": {"cold": {"path": str(checkpoint)}}, "stages": [stage]}


def summarise_run(run_dir: Path, wall: float) -> dict:
    records = [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    steady = [r["step_s"] for r in records if r["step"] >= 3]
    median = statistics.median(steady)
    dev = [{"step": d["step"], "pass@1": d["dev_pass@1"]}
           for d in json.loads((run_dir / "summary.json").read_text())["stages"][0]["metrics"].get("dev_curve", [])]
    return {
        "process_wall_s": round(wall, 1), "median_step_s": round(median, 3), "steps_per_s": round(1 / median, 4),
        "phases_mean_s": {k: round(statistics.mean(r.get(k, 0.0) for r in records), 3)
                          for k in ("generate_s", "reward_s", "train_s", "sync_s", "overlap_s", "overhead_s")},
        "lag_mean": round(statistics.mean(r["policy_version_lag"] for r in records), 3),
        "reward_mean": [round(r["reward_mean"], 4) for r in records],
        "pass_rate": [round(r["pass_rate"], 4) for r in records],
        "step_s": [r["step_s"] for r in records], "dev": dev,
    }


def measure(args) -> None:
    out = Path(args.out)
    checkpoint = Path(args.checkpoint) if args.checkpoint else cold_start(out, args.cold_steps)
    results_path = out / "async_rl.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}
    for seed in args.seeds:
        for label, staleness in (("sync", None), (f"async{args.staleness}", args.staleness)):
            key = f"{label}/seed{seed}"
            if key in results["runs"] and not args.again:
                continue
            run_dir = out / label / f"seed{seed}"
            wall = _run(rl_pipeline(checkpoint, seed, staleness, args.steps, args.threads), run_dir)
            results["runs"][key] = summarise_run(run_dir, wall)
            print(key, {k: v for k, v in results["runs"][key].items() if not isinstance(v, list)}, flush=True)
            results_path.write_text(json.dumps(results, indent=1))
    results["machine"] = {**machine(), "date": time.strftime("%Y-%m-%d")}
    results_path.write_text(json.dumps(results, indent=1))
    report(results)


def report(results: dict) -> None:
    """Print the table (mean and range over seeds per mode) and draw the figure."""
    modes: dict[str, list[dict]] = {}
    for key, run in sorted(results["runs"].items()):
        modes.setdefault(key.split("/")[0], []).append(run)
    print("| mode | seeds | median step s | steps/s | x sync | reward, first 5 steps | reward, last 5 | "
          "pass rate, last 5 | dev pass@1 at the end | lag |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = statistics.mean(r["steps_per_s"] for r in modes.get("sync", [])) if "sync" in modes else None

    def band(xs: list[float], digits: int = 3) -> str:
        m = statistics.mean(xs)
        return f"{m:.{digits}f} ± {statistics.pstdev(xs):.{digits}f}" if len(xs) > 1 else f"{m:.{digits}f}"

    for mode, runs in modes.items():
        sps = [r["steps_per_s"] for r in runs]
        ratio = f"{statistics.mean(sps) / base:.2f}" if base else "-"
        print(f"| {mode} | {len(runs)} | {band([r['median_step_s'] for r in runs])} | {band(sps)} | {ratio} | "
              f"{band([statistics.mean(r['reward_mean'][:5]) for r in runs])} | "
              f"{band([statistics.mean(r['reward_mean'][-5:]) for r in runs])} | "
              f"{band([statistics.mean(r['pass_rate'][-5:]) for r in runs])} | "
              f"{band([r['dev'][-1]['pass@1'] for r in runs if r['dev']])} | {band([r['lag_mean'] for r in runs], 2)} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for mode, runs in modes.items():
        n = min(len(r["reward_mean"]) for r in runs)
        rewards = np.array([r["reward_mean"][:n] for r in runs])
        clocks = np.array([np.cumsum(r["step_s"][:n]) for r in runs]).mean(axis=0)
        steps = np.arange(1, n + 1)
        for ax, x in ((by_step, steps), (by_time, clocks)):
            line, = ax.plot(x, rewards.mean(axis=0), label=f"{mode} ({len(runs)} seeds)")
            ax.fill_between(x, rewards.min(axis=0), rewards.max(axis=0), color=line.get_color(), alpha=0.2)
    by_step.set(xlabel="step (16 prompts x 8 samples)", ylabel="reward per sample (mean of the step)")
    by_time.set(xlabel="seconds of steps (sum of step_s)")
    by_step.legend()
    fig.suptitle("make run's reasoning RL, synchronous and asynchronous (mean and range over seeds)")
    fig.tight_layout()
    FIGURE.parent.mkdir(exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    print(f"figure: {FIGURE.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run directories and async_rl.json go here")
    ap.add_argument("--checkpoint", help="start every run from this checkpoint instead of a fresh cold start")
    ap.add_argument("--cold-steps", type=int, help="a cold start of this many steps instead of tiny_r1's early "
                                                      "stopped one (about 2,400 steps)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--staleness", type=int, default=1)
    ap.add_argument("--steps", type=int, help="override the stage's 40 steps (a quick look)")
    ap.add_argument("--threads", type=int, help="torch threads of trainer and engine (tiny_r1.yaml: 2 each)")
    ap.add_argument("--again", action="store_true", help="re-run runs already in async_rl.json")
    ap.add_argument("--report", action="store_true", help="only print the table and draw the figure")
    args = ap.parse_args()
    if args.report:
        report(json.loads((Path(args.out) / "async_rl.json").read_text()))
    else:
        measure(args)


if __name__ == "__main__":
    main()

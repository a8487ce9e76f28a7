"""What an SFT step of `make run`'s cold start costs against a bare DeepSpeed step on the same batches.

The model, batches and threads of pipelines/tiny_r1.yaml's `cold_start` (our DeepSeek-V3, 32 sequences of up to
256 tokens per step, one micro-batch, ZeRO-2, 2 threads). Four ways to take the same steps, each on a fresh copy of
the model, over the same sequence of batches:

  bare DeepSpeed      deepspeed.initialize on the model; per step forward with labels, backward on the model's own
                      loss, engine.step(): what a user would write by hand
  PolicyTrainer       PolicyTrainer.setup + sft_step called in this process (no Ray): the trainer's own work per
                      step (token-mean loss over the global batch, router-bias update, metrics)
  Ray actor           the same PolicyTrainer as a Ray actor, the batch sent with each call (`call_each`)
  stage step          the SFT stage's own step work around that call: choosing the rows, padding and sharding
                      them (`_shard`) in the driver, then the actor call

    python benchmarks/sft_step.py --steps 30

Prints the median seconds per step of each (the first 5 steps warm up and are left out) and their ratio to the
bare step, one JSON line per way, then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on 127.0.0.1 (orchestrator/loopback.py)

from benchmarks.resume import machine  # noqa: E402

WARMUP = 5


def prepare(workdir: Path, rows: int):
    """tiny_r1's cold-start model (fresh weights) and its encoded SFT examples."""
    from transformers import AutoTokenizer

    from orchestrator.data.chat import encode_sft
    from orchestrator.data.synthetic import make_split
    from orchestrator.fresh_model import materialize
    from orchestrator.yaml_errors import load_pipeline

    spec = load_pipeline(ROOT / "pipelines" / "tiny_r1.yaml", check_inputs=False)
    stage = next(s for s in spec.stages if s.name == "cold_start")
    data = make_split("sft", rows, digits=2, ops=("add", "sub", "mul"), worked=0.45)
    path = materialize("tiny", spec.models["tiny"].init, (r["prompt"] + "\n" + r["response"] for r in data),
                       workdir / "model")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    examples = [e for e in (encode_sft(tokenizer, r, stage.train.max_seq_len) for r in data) if e is not None]
    return spec, stage, path, tokenizer, examples


def batches_of(stage, examples, steps: int) -> list[list[int]]:
    from orchestrator.stages.sft import EpochBatches

    order = EpochBatches(len(examples), stage.train.batch_size, stage.train.seed)
    return [order.next() for _ in range(steps)]


def timed(steps: list, step) -> list[float]:
    out = []
    for indices in steps:
        t0 = time.perf_counter()
        step(indices)
        out.append(time.perf_counter() - t0)
    return out[WARMUP:]


def bare(settings, sharded: dict) -> list[float]:
    import deepspeed
    import torch

    from actors.trainer import load_causal_lm

    model = load_causal_lm(settings.model_path, torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.optim.lr, betas=settings.optim.betas,
                                  weight_decay=settings.optim.weight_decay)
    config = {"train_micro_batch_size_per_gpu": settings.micro_batch_size, "gradient_accumulation_steps": 1,
              "train_batch_size": settings.micro_batch_size, "gradient_clipping": settings.optim.grad_clip or 0.0,
              "zero_optimization": {"stage": settings.zero_stage}, "zero_allow_untested_optimizer": True,
              "steps_per_print": 1 << 30}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)

    def step(key) -> None:
        batch = sharded[key]
        labels = batch.input_ids.masked_fill(~batch.loss_mask, -100)
        out = engine(input_ids=batch.input_ids, labels=labels)
        engine.backward(out.loss)
        engine.step()

    return timed(list(sharded), step)


def in_process(settings, sharded: dict) -> list[float]:
    from actors.trainer import PolicyTrainer

    trainer = PolicyTrainer(0, 1, threads=None)
    trainer.setup(settings)
    return timed(list(sharded), lambda key: trainer.sft_step(sharded[key]))


def via_ray(settings, cluster, sharded: dict, examples, pad_id: int) -> tuple[list[float], list[float]]:
    from orchestrator.cluster import spawn_trainers
    from orchestrator.stages.sft import _shard

    trainers = spawn_trainers(cluster.trainer, cluster)
    try:
        trainers.call("setup", settings)
        actor = timed(list(sharded), lambda key: trainers.call_each("sft_step", [(sharded[key],)]))
        stage = timed(list(sharded), lambda key: trainers.call_each(
            "sft_step", [(b,) for b in _shard([examples[i] for i in key], 1, pad_id)]))
    finally:
        trainers.shutdown()
    return actor, stage


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rows", type=int, default=2000)
    args = p.parse_args()

    import ray
    import torch

    from actors.trainer import PolicyTrainer
    from orchestrator.stages.sft import _shard

    work = Path(tempfile.mkdtemp(prefix="sft-step-"))
    spec, stage, path, tokenizer, examples = prepare(work, args.rows)
    steps = batches_of(stage, examples, args.steps + WARMUP)
    # The same padded batches for the first three ways (the fourth pads its own in the driver, as the stage does).
    sharded = {tuple(ix): _shard([examples[i] for i in ix], 1, tokenizer.pad_token_id)[0] for ix in steps}
    settings = stage.train.settings(str(path), total_steps=len(steps), grad_accum=1, fp8=False)
    threads = spec.cluster.trainer.threads or 1
    torch.set_num_threads(threads)

    PolicyTrainer(0, 1).init_distributed("127.0.0.1", _free_port())   # one process group for both in-process ways
    times = {"bare DeepSpeed": bare(settings, sharded), "PolicyTrainer": in_process(settings, sharded)}
    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}}, configure_logging=False, log_to_driver=False)
    try:
        times["Ray actor"], times["stage step"] = via_ray(settings, spec.cluster, sharded, examples,
                                                          tokenizer.pad_token_id)
    finally:
        ray.shutdown()

    floor = statistics.median(times["bare DeepSpeed"])
    info = machine() | {"torch": torch.__version__, "threads": threads, "steps": args.steps,
                        "batch": stage.train.batch_size, "max_seq_len": stage.train.max_seq_len}
    print(json.dumps(info))
    print("| way | median s/step | min s | x bare |\n|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(json.dumps({"way": name, "median_s": round(median, 4), "min_s": round(min(values), 4),
                          "ratio": round(median / floor, 3)}), file=sys.stderr)
        print(f"| {name} | {median:.4f} | {min(values):.4f} | {median / floor:.2f} |")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()

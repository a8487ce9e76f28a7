"""Weight sync (trainer → running vLLM engine) against a plain in-memory copy of the same weights.

Starts an embedded Ray with one PolicyTrainer and one RolloutWorker serving a DeepSeek-V3 of the given size
(ours; the tiny pipelines' shape by default) or a Qwen2 (tied embeddings with --tied, the Qwen2.5/Qwen3 layout),
then times, interleaved, per repetition:

  in-memory sync   actors/weight_sync.py: gather on the trainer, ray.put buckets, vLLM layerwise reload
  checkpoint sync  the fallback path: save_hf to disk on the trainer, RolloutWorker.load from it
  plain copy       torch: clone every tensor of the same state dict in one process (the floor: a memcpy)

    python benchmarks/weight_sync.py                         # tiny_sft_rl's V3, 5 repetitions
    python benchmarks/weight_sync.py --hidden 512 --layers 8 # ~10x the parameters
    python benchmarks/weight_sync.py --arch qwen2 --layers 2 --tied   # a tiny Qwen2 with tied embeddings
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on 127.0.0.1 (orchestrator/loopback.py)


def model_config(hidden: int, layers: int) -> dict:
    heads = max(4, hidden // 32)
    return {"hidden_size": hidden, "intermediate_size": 3 * hidden, "moe_intermediate_size": hidden // 2,
            "num_hidden_layers": layers, "first_k_dense_replace": 1, "num_attention_heads": heads,
            "q_lora_rank": None, "kv_lora_rank": hidden // 2, "qk_nope_head_dim": 24, "qk_rope_head_dim": 8,
            "v_head_dim": 32, "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 2,
            "topk_group": 1, "routed_scaling_factor": 1.0, "num_nextn_predict_layers": 1,
            "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "yarn", "factor": 1.0, "original_max_position_embeddings": 512,
                                "rope_theta": 10000.0, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
                                "mscale_all_dim": 1.0}}


def qwen2_config(hidden: int, layers: int, tied: bool) -> dict:
    heads = max(4, hidden // 32)
    return {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": heads // 2, "tie_word_embeddings": tied}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--bucket-mb", type=float, default=64.0)
    p.add_argument("--arch", choices=["deepseek_v3", "qwen2"], default="deepseek_v3")
    p.add_argument("--tied", action="store_true", help="qwen2 only: tie the input and output embeddings")
    args = p.parse_args()

    import ray
    import torch
    from safetensors.torch import load_file

    from actors.weight_sync import sync_weights
    from orchestrator.cluster import spawn_rollout, spawn_trainers
    from orchestrator.config import ClusterSpec, InitSpec, RoleResources, RolloutEngineSpec, SFTTrainSpec
    from orchestrator.data.synthetic import make_split
    from orchestrator.fresh_model import materialize

    rows = make_split("sft", 300, digits=2)
    config = (model_config(args.hidden, args.layers) if args.arch == "deepseek_v3"
              else qwen2_config(args.hidden, args.layers, args.tied))
    init = InitSpec.model_validate({"arch": args.arch, "config": config,
                                    "tokenizer": {"vocab_size": 512, "train_on": ["sft"]}})
    work = Path(tempfile.mkdtemp(prefix="weight-sync-"))
    path = materialize("bench", init, (r["prompt"] + "\n" + r["response"] for r in rows), work / "model")
    state = load_file(str(path / "model.safetensors"))
    n_params = sum(t.numel() for t in state.values())
    megabytes = sum(t.numel() * t.element_size() for t in state.values()) / 2**20

    cluster = ClusterSpec(trainer=RoleResources(workers=1, cpus=1, threads=1),
                          rollout=RoleResources(workers=1, cpus=1, threads=1))
    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}},
             configure_logging=False, log_to_driver=False)
    trainers = spawn_trainers(cluster.trainer, cluster)
    rollout = spawn_rollout(cluster.rollout, cluster, RolloutEngineSpec(max_model_len=512).settings())
    train = SFTTrainSpec(steps=1, batch_size=1, micro_batch_size=1)
    trainers.call("setup", train.settings(str(path), total_steps=1, grad_accum=1, fp8=False))
    rollout.call("load", str(path), 0)

    times: dict[str, list[float]] = {"in-memory sync": [], "checkpoint sync": [], "plain copy": []}
    for version in range(1, args.repeat + 2):
        t0 = time.perf_counter()
        sync_weights(trainers, rollout, version, args.bucket_mb)
        t1 = time.perf_counter()
        trainers.call("save_hf", str(work / "sync"))
        rollout.call("load", str(work / "sync"), version)
        t2 = time.perf_counter()
        copy = {k: v.clone() for k, v in state.items()}
        t3 = time.perf_counter()
        del copy
        if version > 1:  # the first round warms caches and allocators
            times["in-memory sync"].append(t1 - t0)
            times["checkpoint sync"].append(t2 - t1)
            times["plain copy"].append(t3 - t2)
    trainers.shutdown()
    rollout.shutdown()
    ray.shutdown()

    floor = statistics.median(times["plain copy"])
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, {os.cpu_count()} CPUs; "
          f"{args.arch}{' (tied)' if args.tied else ''} hidden {args.hidden}, {args.layers} layers: "
          f"{n_params / 1e6:.2f}M parameters, "
          f"{megabytes:.1f} MB fp32; buckets of {args.bucket_mb:g} MB; {args.repeat} repetitions\n")
    print("| path | median s | min s | x plain copy |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.4f} | {min(values):.4f} | {median / floor:,.0f} |")


if __name__ == "__main__":
    main()

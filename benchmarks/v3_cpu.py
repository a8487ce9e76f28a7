"""Forward+backward tokens/s of a small DeepSeek-V3 against a dense model with the same active parameters.

Both models are our implementation and share everything but the FFN: the same MLA attention, embeddings and
head; the V3 model has DeepSeekMoE layers (shared expert + top-K of E routed experts, group-limited routing),
the dense one a single SwiGLU per layer as wide as the MoE's active path (shared + K experts). So the ratio
isolates what routing and sorted dispatch cost per token at equal active FLOPs.

    python benchmarks/v3_cpu.py --threads 1           # CPU, fp32, prints a markdown table
    python benchmarks/v3_cpu.py --device cuda --dtype bfloat16 --batch 16 --seq 1024
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from actors.model import DeepseekV3Config, DeepseekV3ForCausalLM


def configs(args: argparse.Namespace) -> dict[str, DeepseekV3Config]:
    active_width = args.expert_width * (args.top_k + 1)  # shared expert + top-K routed
    common = dict(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=8,
        q_lora_rank=args.hidden // 2, kv_lora_rank=args.hidden // 4, qk_nope_head_dim=32, qk_rope_head_dim=16,
        v_head_dim=32, intermediate_size=active_width, moe_intermediate_size=args.expert_width,
        n_shared_experts=1, n_routed_experts=args.experts, num_experts_per_tok=args.top_k, n_group=4,
        topk_group=2, max_position_embeddings=max(4096, args.seq), num_nextn_predict_layers=0,
    )
    return {
        "deepseek-v3 (MoE)": DeepseekV3Config.from_dict({**common, "first_k_dense_replace": 1}),
        "dense, equal active": DeepseekV3Config.from_dict({**common, "first_k_dense_replace": args.layers}),
    }


def active_parameters(model: DeepseekV3ForCausalLM) -> tuple[int, int]:
    """(total, active per token): routed experts count K/E of their parameters."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    return total, total - routed + routed * cfg.num_experts_per_tok // max(cfg.n_routed_experts, 1)


def time_step(model: DeepseekV3ForCausalLM, ids: torch.Tensor) -> float:
    """Seconds for one forward+backward over ids [B, T] (gradients discarded)."""
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    model(ids, labels=ids).loss.backward()
    sync()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def measure(models: dict[str, DeepseekV3ForCausalLM], args: argparse.Namespace) -> dict[str, list[float]]:
    """Tokens/s per step. Steps interleave the models, alternating who goes first, so that load from other
    processes on a shared machine falls on both alike."""
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=args.device)
    rates = {name: [] for name in models}
    for step in range(args.warmup + args.steps):
        order = list(models) if step % 2 == 0 else list(models)[::-1]
        for name in order:
            seconds = time_step(models[name], ids)
            if step >= args.warmup:
                rates[name].append(ids.numel() / seconds)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--expert-width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    models = {}
    for name, cfg in configs(args).items():
        torch.manual_seed(0)
        models[name] = DeepseekV3ForCausalLM(cfg).to(args.device, getattr(torch, args.dtype)).train()
    rates = measure(models, args)

    print(f"{platform.node() or 'host'}: {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.device} {args.dtype}, batch {args.batch} x seq {args.seq}, "
          f"{args.steps} interleaved timed steps each\n")
    print("| model | params total | params active/token | fwd+bwd tokens/s, median | best step |")
    print("|---|---:|---:|---:|---:|")
    medians, best = {}, {}
    for name, model in models.items():
        total, active = active_parameters(model)
        medians[name], best[name] = statistics.median(rates[name]), max(rates[name])
        print(f"| {name} | {total / 1e6:.2f}M | {active / 1e6:.2f}M | {medians[name]:,.0f} | {best[name]:,.0f} |")
    (moe, dense), (moe_best, dense_best) = medians.values(), best.values()
    print(f"\nratio MoE / dense tokens/s: {moe / dense:.2f} (median), {moe_best / dense_best:.2f} (best steps)")


if __name__ == "__main__":
    main()

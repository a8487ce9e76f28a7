"""FP8 speed on a GPU: our block-scaled Triton GEMM at DeepSeek-V3 shapes next to torch.matmul in BF16 and
torch._scaled_mm with row-wise scales, then one V3 decoder layer (dense and MoE) forward+backward, FP8 vs BF16.

    python benchmarks/fp8.py                      # CUDA (an H100/H200): prints the tables for benchmarks/RESULTS.md
    python benchmarks/fp8.py --json fp8.json      # also writes every number
    python benchmarks/fp8.py --skip-layers        # GEMMs only

GEMMs: C [M, N] = A [M, K] B [N, K]^T, M = 4096 tokens, one row per (K, N) of V3's projections. Columns:
  bf16           torch.matmul, BF16 in and out
  scaled_mm      torch._scaled_mm, E4M3 with one scale per row of A and of B (per-tensor-row, not block-wise)
  fp8 gemm       ours, E4M3 with 1x128 scales for A and 128x128 for B, operands quantised beforehand
  fp8 linear     ours as FP8Linear's forward runs it: quantise A and B, then the GEMM
TFLOP/s = 2 M N K / median time (triton.testing.do_bench). Peak E4M3 dense of an H100/H200 SXM: 1,979.

Without CUDA there is nothing to time: the script says so and checks one small shape through the torch reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from actors.model import DeepseekV3Config, LinearFactory, fp8
from actors.model.block import DecoderLayer
from actors.model.fp8 import FP8LinearFactory, FP8Recipe, relative_error
from actors.model.rope import RotaryEmbedding

SHAPES = [(7168, 2048), (7168, 18432), (2048, 7168), (7168, 576), (1536, 24576)]  # (K, N)
FP8_PEAK_TFLOPS = 1979.0


def _rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = x.float().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / fp8.E4M3_MAX
    return (x.float() / scale).clamp(-fp8.E4M3_MAX, fp8.E4M3_MAX).to(torch.float8_e4m3fn), scale


def bench_gemms(m: int, shapes: list[tuple[int, int]]) -> list[dict]:
    from triton.testing import do_bench

    kernels = fp8.triton_kernels()
    rows = []
    for k, n in shapes:
        torch.manual_seed(0)
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        b = (torch.randn(n, k, device="cuda") * 0.02).to(torch.bfloat16)
        exact = a.float() @ b.float().T
        aq, sa = kernels.quantize_rows(a)
        bq, sb = kernels.quantize_blocks(b)
        ar, sar = _rowwise(a)
        br, sbr = _rowwise(b)
        runs = {
            "bf16": lambda: torch.matmul(a, b.T),
            "scaled_mm": lambda: torch._scaled_mm(ar, br.t(), scale_a=sar, scale_b=sbr.t(), out_dtype=torch.bfloat16),
            "fp8 gemm": lambda: kernels.scaled_gemm(aq, sa, bq, sb, 128, torch.bfloat16),
            "fp8 linear": lambda: kernels.scaled_gemm(*kernels.quantize_rows(a), *kernels.quantize_blocks(b), 128,
                                                      torch.bfloat16),
        }
        row = {"M": m, "K": k, "N": n}
        for name, fn in runs.items():
            out = fn()  # the first call autotunes; keep it out of the timing
            torch.cuda.synchronize()
            ms = do_bench(fn, warmup=25, rep=200, return_mode="median")
            row[name] = {"ms": ms, "tflops": 2 * m * n * k / ms / 1e9, "rel_err": relative_error(out, exact)}
        rows.append(row)
        print(_gemm_line(row), flush=True)
    return rows


def _gemm_line(row: dict) -> str:
    cells = [f"{row['K']}x{row['N']}"]
    cells += [f"{row[c]['tflops']:,.0f}" for c in ("bf16", "scaled_mm", "fp8 gemm", "fp8 linear")]
    cells += [f"{row['fp8 gemm']['tflops'] / row['bf16']['tflops']:.2f}x",
              f"{100 * row['fp8 gemm']['tflops'] / FP8_PEAK_TFLOPS:.0f}%",
              f"{row['fp8 gemm']['rel_err']:.4f}", f"{row['scaled_mm']['rel_err']:.4f}"]
    return "| " + " | ".join(cells) + " |"


def bench_layer(kind: str, tokens: int, experts: int) -> dict:
    """One V3 decoder layer (MLA + dense SwiGLU, or MLA + DeepSeekMoE) forward+backward, BF16 then FP8."""
    from triton.testing import do_bench

    cfg = DeepseekV3Config(n_routed_experts=experts, n_group=min(8, experts // 2), topk_group=min(4, experts // 4),
                           num_nextn_predict_layers=0)
    index = 0 if kind == "dense" else cfg.first_k_dense_replace
    rope = RotaryEmbedding(cfg.qk_rope_head_dim, cfg.rope_parameters).cuda()
    cos, sin = rope(torch.arange(tokens, device="cuda")[None])
    result = {"layer": kind, "tokens": tokens, "experts": experts if kind == "moe" else 0}
    for mode, linear in (("bf16", LinearFactory()), ("fp8", FP8LinearFactory(recipe=FP8Recipe()))):
        torch.manual_seed(0)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device("cuda"):
                layer = DecoderLayer(cfg, index, linear)
        finally:
            torch.set_default_dtype(previous)
        layer = layer.to(torch.bfloat16)  # the router bias returns to fp32 (Float32Buffers)
        h = torch.randn(1, tokens, cfg.hidden_size, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        grad = torch.randn_like(h)
        params = list(layer.parameters())

        def step():
            out, _ = layer(h, cos, sin, None)
            out.backward(grad)

        step()
        torch.cuda.synchronize()
        result[mode] = {"ms": do_bench(step, warmup=5, rep=50, grad_to_none=[h, *params], return_mode="median"),
                        "params": sum(p.numel() for p in params)}
        print(f"{kind} layer {mode}: {result[mode]['ms']:.2f} ms forward+backward", flush=True)
        layer = h = grad = params = None  # freed before the next mode builds its layer (names stay bound)
        torch.cuda.empty_cache()
    result["speedup"] = result["bf16"]["ms"] / result["fp8"]["ms"]
    return result


def cpu_smoke() -> None:
    print("No CUDA device: there is nothing to time here. FP8 speed needs an H100/H200 (Triton kernels). Checking "
          "one small shape through the torch reference instead (correctness, not speed).")
    torch.manual_seed(0)
    x, w = torch.randn(256, 384), torch.randn(320, 384) * 0.02
    t0 = time.perf_counter()
    y = fp8.fp8_linear(x, w, FP8Recipe())
    print(f"reference FP8Linear 256x384 @ 384x320: relative error vs fp32 {relative_error(y, x @ w.T):.4f} "
          f"({1000 * (time.perf_counter() - t0):.1f} ms, emulated)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=4096, help="tokens (rows of A)")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens through the decoder layer")
    parser.add_argument("--experts", type=int, default=256, help="routed experts of the MoE layer (V3: 256)")
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        cpu_smoke()
        sys.exit(0)
    if fp8.triton_kernels() is None:
        sys.exit("The FP8 kernels need the triton package; install it (the GPU profile's torch pins one).")
    device = torch.cuda.get_device_name()
    print(f"{device}, torch {torch.__version__}\n")
    print("| K x N | bf16 TFLOP/s | scaled_mm row-wise | fp8 gemm (ours) | fp8 linear (ours, with quantisation) | "
          "ours / bf16 | % of FP8 peak | ours rel. err | scaled_mm rel. err |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    report = {"device": device, "torch": torch.__version__, "gemms": bench_gemms(args.m, SHAPES)}
    if not args.skip_layers:
        report["layers"] = [bench_layer(kind, args.tokens, args.experts) for kind in ("dense", "moe")]
        print("\n| layer | tokens | bf16 ms | fp8 ms | speed-up |\n|---|---:|---:|---:|---:|")
        for r in report["layers"]:
            print(f"| {r['layer']} | {r['tokens']} | {r['bf16']['ms']:.2f} | {r['fp8']['ms']:.2f} | "
                  f"{r['speedup']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

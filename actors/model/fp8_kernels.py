"""Triton kernels of the FP8 recipe in fp8.py, behind launch wrappers that assert their preconditions.

Shapes: M, N rows, K the reduction dim, KB = ceil(K / 128). Same contracts as fp8.py's torch reference:
    quantize_rows      x [M, K]        -> E4M3 [M, K], fp32 scales [M, KB]            (1x128 tiles)
    quantize_blocks    w [N, K]        -> E4M3 [N, K], fp32 scales [ceil(N/128), KB]  (128x128 blocks)
    dequantize_blocks  q, scales       -> w [N, K]
    scaled_gemm        A [M, K], B [N, K] in E4M3 with their scales -> C = A B^T [M, N]
Edges that are not multiples of 128 are masked: a short tile's scale comes from its real elements only.

The GEMM multiplies E4M3 tiles with tl.dot (wgmma on Hopper) into a fresh fp32 product per 128-deep K-block and
adds it, times the two operands' scales, to an fp32 accumulator: promotion every 128 elements of K, as DeepGEMM
does on the tensor cores' limited-precision accumulators. Both operands are K-major (row-major [rows, K]), the
layout Hopper's FP8 wgmma takes.

Kernels run on CUDA tensors; with TRITON_INTERPRET=1 set before this module is imported they run on CPU tensors in
Triton's numpy interpreter (tests), where E4M3 rounding can differ from torch's cast by one step.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .fp8_format import AMAX_FLOOR, BLOCK, E4M3_MAX

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
"""Whether these kernels were built for Triton's CPU interpreter (Triton decides when a kernel is defined)."""
_MAX = tl.constexpr(E4M3_MAX)
_FLOOR = tl.constexpr(AMAX_FLOOR)
_TILE = tl.constexpr(BLOCK)

_HIGH = (torch.float32, torch.bfloat16, torch.float16)


def _configs(options: list[dict], warps_stages: list[tuple[int, int]]) -> list[triton.Config]:
    if INTERPRETED:  # one small tile: the interpreter is slow, and timing configs there means nothing
        return [triton.Config({k: min(v, 32) for k, v in options[0].items()}, num_warps=1, num_stages=1)]
    return [triton.Config(meta, num_warps=w, num_stages=s) for meta, (w, s) in zip(options, warps_stages)]


# ---------------------------------------------------------------------------------------------- quantisation
@triton.jit
def _scale(amax, POW2: tl.constexpr):
    scale = tl.maximum(amax, _FLOOR) / _MAX
    if POW2:
        scale = tl.exp2(tl.ceil(tl.log2(scale)))
    return scale


@triton.jit
def _round_e4m3(v):
    """v (fp32) clamped to +-448 and rounded to the nearest E4M3 value (ties to even), still in fp32.

    Rounding here, in fp32, leaves the cast to E4M3 exact: Triton's interpreter drops the carry when rounding
    crosses a power of two (124.3 -> 64), and with the value pre-rounded both it and the GPU match torch's cast.
    """
    v = tl.minimum(tl.maximum(v, -_MAX), _MAX)
    exponent = tl.maximum(((v.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127, -6)  # below 2^-6: subnormal step
    step = ((exponent - 3 + 127) << 23).to(tl.float32, bitcast=True)  # 3 mantissa bits
    inv_step = ((127 - exponent + 3) << 23).to(tl.float32, bitcast=True)
    return ((v * inv_step + 12582912.0) - 12582912.0) * step  # adding 1.5 * 2^23 rounds to an integer


@triton.autotune(configs=_configs([{"BLOCK_M": 8}, {"BLOCK_M": 32}, {"BLOCK_M": 64}], [(4, 1), (4, 1), (8, 1)]),
                 key=["K"])
@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, s_ptr, M, K, KB, POW2: tl.constexpr, BLOCK_M: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * _TILE + tl.arange(0, _TILE)
    mask = (rows[:, None] < M) & (cols[None, :] < K)
    offsets = rows[:, None].to(tl.int64) * K + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    scale = _scale(tl.max(tl.abs(x), axis=1), POW2)
    tl.store(q_ptr + offsets, _round_e4m3(x / scale[:, None]).to(q_ptr.dtype.element_ty), mask=mask)
    tl.store(s_ptr + rows.to(tl.int64) * KB + tl.program_id(1), scale, mask=rows < M)


@triton.jit
def _quantize_blocks_kernel(w_ptr, q_ptr, s_ptr, N, K, KB, POW2: tl.constexpr):
    rows = tl.program_id(0) * _TILE + tl.arange(0, _TILE)
    cols = tl.program_id(1) * _TILE + tl.arange(0, _TILE)
    mask = (rows[:, None] < N) & (cols[None, :] < K)
    offsets = rows[:, None].to(tl.int64) * K + cols[None, :]
    w = tl.load(w_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    scale = _scale(tl.max(tl.max(tl.abs(w), axis=1), axis=0), POW2)
    tl.store(q_ptr + offsets, _round_e4m3(w / scale).to(q_ptr.dtype.element_ty), mask=mask)
    tl.store(s_ptr + tl.program_id(0) * KB + tl.program_id(1), scale)


@triton.jit
def _dequantize_blocks_kernel(q_ptr, s_ptr, w_ptr, N, K, KB):
    rows = tl.program_id(0) * _TILE + tl.arange(0, _TILE)
    cols = tl.program_id(1) * _TILE + tl.arange(0, _TILE)
    mask = (rows[:, None] < N) & (cols[None, :] < K)
    offsets = rows[:, None].to(tl.int64) * K + cols[None, :]
    scale = tl.load(s_ptr + tl.program_id(0) * KB + tl.program_id(1))
    w = tl.load(q_ptr + offsets, mask=mask, other=0.0).to(tl.float32) * scale
    tl.store(w_ptr + offsets, w.to(w_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------- GEMM
# Hopper (H100/H200): 128-deep E4M3 tiles, 64-256 wide; stages sized to ~228 KB of shared memory per SM.
_GEMM_TILES = [{"BLOCK_M": 128, "BLOCK_N": 128}, {"BLOCK_M": 128, "BLOCK_N": 256}, {"BLOCK_M": 256, "BLOCK_N": 128},
               {"BLOCK_M": 64, "BLOCK_N": 128}, {"BLOCK_M": 128, "BLOCK_N": 64}, {"BLOCK_M": 64, "BLOCK_N": 256}]
_GEMM_WARPS_STAGES = [(8, 4), (8, 3), (8, 3), (4, 4), (4, 4), (8, 3)]


@triton.autotune(configs=_configs(_GEMM_TILES, _GEMM_WARPS_STAGES), key=["M_BUCKET", "N", "K", "B_GROUP"])
@triton.jit
def _scaled_gemm_kernel(a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, M, N, K, KB, M_BUCKET, B_GROUP: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr = 8):
    # Grouped launch order: GROUP_M row tiles share each column tile while it is hot in L2.
    pid = tl.program_id(0)
    tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * tiles_n)
    first_m = group * GROUP_M
    group_m = min(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * tiles_n)) % group_m
    pid_n = (pid % (GROUP_M * tiles_n)) // group_m

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, _TILE)
    a_ptrs = a_ptr + rm[:, None].to(tl.int64) * K + rk[None, :]
    b_ptrs = b_ptr + rn[:, None].to(tl.int64) * K + rk[None, :]
    sa_ptrs = sa_ptr + rm.to(tl.int64) * KB
    sb_ptrs = sb_ptr + (rn // B_GROUP).to(tl.int64) * KB
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, KB):
        k_left = K - kb * _TILE
        a = tl.load(a_ptrs, mask=(rm[:, None] < M) & (rk[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(rn[:, None] < N) & (rk[None, :] < k_left), other=0.0)
        sa = tl.load(sa_ptrs + kb, mask=rm < M, other=0.0)
        sb = tl.load(sb_ptrs + kb, mask=rn < N, other=0.0)
        acc += tl.dot(a, tl.trans(b)) * sa[:, None] * sb[None, :]
        a_ptrs += _TILE
        b_ptrs += _TILE
    c_ptrs = c_ptr + rm[:, None].to(tl.int64) * N + rn[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


# ---------------------------------------------------------------------------------------------- launch wrappers
def _check(name: str, t: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    assert t.ndim == 2, f"{name}: expected a 2-D tensor, got shape {tuple(t.shape)}"
    assert t.is_contiguous(), f"{name}: expected a contiguous (row-major) tensor"
    assert t.dtype in dtypes, f"{name}: dtype {t.dtype} is not one of {dtypes}"
    assert t.is_cuda or INTERPRETED, (f"{name}: Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 set before "
                                      "actors.model.fp8_kernels is imported)")


def quantize_rows(x: torch.Tensor, power_of_two: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] (fp32/bf16/fp16) -> E4M3 [M, K], fp32 scales [M, KB] per 1x128 tile."""
    _check("quantize_rows x", x, _HIGH)
    M, K = x.shape
    KB = triton.cdiv(K, BLOCK)
    q = torch.empty_like(x, dtype=torch.float8_e4m3fn)
    scale = torch.empty(M, KB, dtype=torch.float32, device=x.device)
    if x.numel():
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), KB)
        _quantize_rows_kernel[grid](x, q, scale, M, K, KB, POW2=power_of_two)
    return q, scale


def quantize_blocks(w: torch.Tensor, power_of_two: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> E4M3 [N, K], fp32 scales [ceil(N/128), KB] per 128x128 block."""
    _check("quantize_blocks w", w, _HIGH)
    N, K = w.shape
    grid = (triton.cdiv(N, BLOCK), triton.cdiv(K, BLOCK))
    q = torch.empty_like(w, dtype=torch.float8_e4m3fn)
    scale = torch.empty(grid, dtype=torch.float32, device=w.device)
    if w.numel():
        _quantize_blocks_kernel[grid](w, q, scale, N, K, grid[1], POW2=power_of_two)
    return q, scale


def dequantize_blocks(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """E4M3 q [N, K] with 128x128 block scales [ceil(N/128), KB] -> w [N, K] in `dtype`."""
    _check("dequantize_blocks q", q, (torch.float8_e4m3fn,))
    _check("dequantize_blocks scale", scale, (torch.float32,))
    N, K = q.shape
    grid = (triton.cdiv(N, BLOCK), triton.cdiv(K, BLOCK))
    assert tuple(scale.shape) == grid, f"dequantize_blocks: scale shape {tuple(scale.shape)}, expected {grid}"
    w = torch.empty(N, K, dtype=dtype, device=q.device)
    if q.numel():
        _dequantize_blocks_kernel[grid](q, scale, w, N, K, grid[1])
    return w


def scaled_gemm(a: torch.Tensor, sa: torch.Tensor, b: torch.Tensor, sb: torch.Tensor, b_rows_per_scale: int,
                out_dtype: torch.dtype) -> torch.Tensor:
    """C [M, N] = A [M, K] B [N, K]^T; sa [M, KB] per 1x128 tile of A; sb [ceil(N / b_rows_per_scale), KB], where
    b_rows_per_scale is 128 (B a weight in 128x128 blocks) or 1 (B in 1x128 tiles). fp32 accumulation."""
    for name, t, dtypes in (("a", a, (torch.float8_e4m3fn,)), ("b", b, (torch.float8_e4m3fn,)),
                            ("sa", sa, (torch.float32,)), ("sb", sb, (torch.float32,))):
        _check(f"scaled_gemm {name}", t, dtypes)
    assert b_rows_per_scale in (1, BLOCK), f"scaled_gemm: b_rows_per_scale must be 1 or {BLOCK}"
    (M, K), (N, K_b) = a.shape, b.shape
    KB = triton.cdiv(K, BLOCK)
    assert K == K_b, f"scaled_gemm: A is [{M}, {K}] but B is [{N}, {K_b}]; both must be K-major with the same K"
    assert tuple(sa.shape) == (M, KB), f"scaled_gemm: sa shape {tuple(sa.shape)}, expected {(M, KB)}"
    sb_rows = triton.cdiv(N, b_rows_per_scale)
    assert tuple(sb.shape) == (sb_rows, KB), f"scaled_gemm: sb shape {tuple(sb.shape)}, expected {(sb_rows, KB)}"
    c = torch.empty(M, N, dtype=out_dtype, device=a.device)
    if M == 0 or N == 0:
        return c
    if K == 0:
        return c.zero_()
    # Autotune per power-of-two bucket of M: token counts change every batch, a retune per count would not pay.
    m_bucket = min(triton.next_power_of_2(M), 1 << 16)
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)
    _scaled_gemm_kernel[grid](a, b, c, sa, sb, M, N, K, KB, m_bucket, B_GROUP=b_rows_per_scale)
    return c

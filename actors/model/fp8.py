"""FP8 training of our DeepSeek-V3 with its block-wise E4M3 recipe (DeepSeek-V3 technical report, sec. 3.3).

Shapes: M rows (tokens), K the GEMM's reduction dim, N output features; MB, KB, NB = ceil(M|K|N / 128).

Quantisation: E4M3 (largest finite value 448), one fp32 scale per tile,
    scale = amax(tile) / 448   (or the next power of two at or above it),   q = E4M3(clamp(x / scale, +-448)),
    x ~ q * scale                (Hugging Face checkpoints call this scale `weight_scale_inv`).
Activations and gradients use 1x128 tiles along the GEMM's reduction dim; weights 128x128 blocks, so W and W^T
share one quantisation.

Block-scaled GEMM, C = A B^T:  C = sum over K-blocks kb of (A_q[:, kb] B_q[:, kb]^T) * sa[:, kb] * sb[:, kb],
accumulated in fp32: each 128-deep partial product is promoted to fp32 with its scales (DeepGEMM's promotion).

The three GEMMs of an FP8 linear layer, y = x W^T:
    forward  y  [M, N] = x [M, K] . W [N, K]^T        x: 1x128 along K (per token);  W: 128x128
    dgrad    dx [M, K] = dy [M, N] . (W^T) [K, N]^T   dy: 1x128 along N;             W^T: the same blocks
    wgrad    dW [N, K] = dy^T [N, M] . x^T [K, M]^T   dy^T and x^T: 1x128 along M, i.e. along the token axis
Master weights stay fp32 (the optimizer's copy). The embedding, output head, router, norms, MTP's eh_proj and the
attention core (softmax(q k^T) v) stay in the model dtype: `LinearFactory(fp8_eligible=...)` names which
projections may be FP8, and only those become `FP8Linear`.

Kernels: Triton on CUDA tensors (fp8_kernels.py). Elsewhere, the torch reference below: it quantises exactly as
above, dequantises and multiplies in fp32, which is the same arithmetic up to summation order and the kernels'
E4M3 rounding: FP8 numerics, without the speed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .fp8_format import AMAX_FLOOR, BLOCK, E4M3_MAX
from .layers import LinearFactory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FP8Recipe:
    """The FP8 settings a model carries (no module globals): scales, kernels and the export format."""

    power_of_two_scales: bool = False
    """Round every scale up to a power of two, so rescaling is exact (the report's option for some tensors)."""
    kernels: Literal["auto", "triton", "torch"] = "auto"
    """auto: Triton on CUDA tensors, the torch reference elsewhere; triton also on CPU under TRITON_INTERPRET=1."""
    export: Literal["master", "bf16", "fp8"] = "master"
    """What checkpoints and weight sync carry: the weights as trained (fp32 master), the FP8-quantised weights
    dequantised to bf16, or E4M3 weights with `weight_scale_inv` (the engine must have loaded an FP8 checkpoint:
    vLLM's loader expects the dtypes it was built with)."""


# ---------------------------------------------------------------------------------------------- torch reference
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def scales_from_amax(amax: torch.Tensor, power_of_two: bool) -> torch.Tensor:
    scale = amax.float().clamp(min=AMAX_FLOOR) / E4M3_MAX
    return torch.exp2(torch.ceil(torch.log2(scale))) if power_of_two else scale


def _to_e4m3(x: torch.Tensor) -> torch.Tensor:
    # Clamped first: the cast's handling of values past 448 differs between torch versions and devices.
    return x.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def quantize_rows(x: torch.Tensor, power_of_two: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> E4M3 q [M, K] and fp32 scales [M, KB], one per 1x128 tile of a row (the last tile may be short)."""
    M, K = x.shape
    KB = _cdiv(K, BLOCK)
    tiles = F.pad(x.float(), (0, KB * BLOCK - K)).view(M, KB, BLOCK)
    scale = scales_from_amax(tiles.abs().amax(dim=-1), power_of_two)
    q = _to_e4m3(tiles / scale[..., None]).view(M, KB * BLOCK)[:, :K]
    return q.contiguous(), scale


def quantize_blocks(w: torch.Tensor, power_of_two: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> E4M3 q [N, K] and fp32 scales [NB, KB], one per 128x128 block (edge blocks may be partial)."""
    N, K = w.shape
    NB, KB = _cdiv(N, BLOCK), _cdiv(K, BLOCK)
    blocks = F.pad(w.float(), (0, KB * BLOCK - K, 0, NB * BLOCK - N)).view(NB, BLOCK, KB, BLOCK)
    scale = scales_from_amax(blocks.abs().amax(dim=(1, 3)), power_of_two)
    q = _to_e4m3(blocks / scale[:, None, :, None]).view(NB * BLOCK, KB * BLOCK)[:N, :K]
    return q.contiguous(), scale


def _expand(scale: torch.Tensor, rows_per_scale: int, shape: torch.Size) -> torch.Tensor:
    """Scales [R, KB] -> one per element of a [rows, K] tensor (R = ceil(rows / rows_per_scale))."""
    rows, K = shape
    return scale.repeat_interleave(rows_per_scale, dim=0)[:rows].repeat_interleave(BLOCK, dim=1)[:, :K]


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of quantize_rows: q [M, K] * its 1x128 tile scales [M, KB]."""
    return (q.float() * _expand(scale, 1, q.shape)).to(dtype)


def dequantize_blocks(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of quantize_blocks: q [N, K] * its 128x128 block scales [NB, KB]."""
    return (q.float() * _expand(scale, BLOCK, q.shape)).to(dtype)


def scaled_gemm(a: torch.Tensor, sa: torch.Tensor, b: torch.Tensor, sb: torch.Tensor, b_rows_per_scale: int,
                out_dtype: torch.dtype) -> torch.Tensor:
    """C [M, N] = A [M, K] B [N, K]^T from E4M3 operands: A with 1x128 tile scales sa [M, KB], B with scales
    sb [ceil(N / b_rows_per_scale), KB]: 128 for a weight's 128x128 blocks, 1 for 1x128 tiles."""
    b_deq = dequantize_rows(b, sb) if b_rows_per_scale == 1 else dequantize_blocks(b, sb)
    return (dequantize_rows(a, sa) @ b_deq.T).to(out_dtype)


class _TorchOps:
    quantize_rows = staticmethod(quantize_rows)
    quantize_blocks = staticmethod(quantize_blocks)
    dequantize_blocks = staticmethod(dequantize_blocks)
    scaled_gemm = staticmethod(scaled_gemm)


def triton_kernels():
    """The Triton kernel module, or None when Triton is not installed (the torch reference then runs)."""
    try:
        from . import fp8_kernels
    except ImportError:
        return None
    return fp8_kernels


def ops_for(recipe: FP8Recipe, x: torch.Tensor):
    """The kernels that compute on `x`: Triton for CUDA tensors (or when asked for), the torch reference otherwise."""
    if recipe.kernels == "torch" or (recipe.kernels == "auto" and not x.is_cuda):
        return _TorchOps
    kernels = triton_kernels()
    if kernels is None:
        if recipe.kernels == "triton":
            raise RuntimeError("FP8Recipe(kernels='triton') needs the triton package; install it or use 'auto'.")
        return _TorchOps
    return kernels


# ---------------------------------------------------------------------------------------------- the layer
class _FP8LinearFunction(torch.autograd.Function):
    """y = x W^T with all three GEMMs in FP8 (see the module docstring for each operand's tiles)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, recipe: FP8Recipe) -> torch.Tensor:
        ops, p2 = ops_for(recipe, x), recipe.power_of_two_scales
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        wq, sw = ops.quantize_blocks(weight.contiguous(), p2)
        y = ops.scaled_gemm(*ops.quantize_rows(x2, p2), wq, sw, BLOCK, x.dtype)
        ctx.save_for_backward(x2, wq, sw)
        ctx.recipe, ctx.x_shape, ctx.weight_dtype = recipe, x.shape, weight.dtype
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, wq, sw = ctx.saved_tensors
        ops, p2 = ops_for(ctx.recipe, dy), ctx.recipe.power_of_two_scales
        dy2 = dy.reshape(-1, dy.shape[-1]).contiguous()
        dx = dw = None
        if ctx.needs_input_grad[0]:
            # 128x128 blocks are square, so W^T reuses W's quantisation: only the storage is transposed.
            dx = ops.scaled_gemm(*ops.quantize_rows(dy2, p2), wq.t().contiguous(), sw.t().contiguous(), BLOCK,
                                 dy.dtype).view(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            # The reduction runs over tokens, so both operands are tiled along the token axis.
            dw = ops.scaled_gemm(*ops.quantize_rows(dy2.t().contiguous(), p2),
                                 *ops.quantize_rows(x2.t().contiguous(), p2), 1, ctx.weight_dtype)
        return dx, dw, None


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, recipe: FP8Recipe) -> torch.Tensor:
    """x [..., K] . weight [N, K]^T -> [..., N], every GEMM (forward and both gradients) in block-scaled FP8."""
    return _FP8LinearFunction.apply(x, weight, recipe)


class FP8Linear(nn.Linear):
    """A bias-free nn.Linear (same parameter, same state-dict name) whose GEMMs run in FP8; the weight stays the
    high-precision master."""

    def __init__(self, in_features: int, out_features: int, recipe: FP8Recipe = FP8Recipe(),
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)
        self.recipe = recipe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_linear(x, self.weight, self.recipe)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fp8={self.recipe}"


@dataclass(frozen=True)
class FP8LinearFactory(LinearFactory):
    """Builds FP8Linear for the projections the model calls FP8-eligible, plain nn.Linear for the rest."""

    recipe: FP8Recipe = FP8Recipe()

    def __call__(self, in_features: int, out_features: int, *, fp8_eligible: bool) -> nn.Module:
        layer = super().__call__(in_features, out_features, fp8_eligible=fp8_eligible)
        if not fp8_eligible:
            return layer
        fp8 = FP8Linear(in_features, out_features, self.recipe, device="meta")
        fp8.weight = layer.weight
        return fp8


def fp8_module_names(model: nn.Module) -> list[str]:
    """Names of the modules that are FP8-eligible in `model`'s architecture (ours: attention and MLP/expert
    projections), found by building the same architecture on the meta device with FP8LinearFactory."""
    with torch.device("meta"):
        skeleton = type(model)(model.config, FP8LinearFactory(recipe=FP8Recipe()))
    return [name for name, module in skeleton.named_modules() if isinstance(module, FP8Linear)]


def convert_to_fp8(model: nn.Module, recipe: FP8Recipe = FP8Recipe()) -> list[str]:
    """Swaps the model's FP8-eligible nn.Linear modules for FP8Linear in place, sharing their weight parameters.

    Returns the swapped module names; sets `model.fp8_recipe`. Embedding, output head, router, norms, MTP's
    eh_proj and the attention core keep their precision.
    """
    swapped = fp8_module_names(model)
    for name in swapped:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, attr)
        if not isinstance(old, nn.Linear) or old.bias is not None:
            raise TypeError(f"{name} is {type(old).__name__}; FP8 conversion expects a bias-free nn.Linear there.")
        new = FP8Linear(old.in_features, old.out_features, recipe, device="meta")
        new.weight = old.weight
        setattr(parent, attr, new)
    model.fp8_recipe = recipe
    if recipe.kernels == "torch":
        where = "the torch reference, as asked"
    elif torch.cuda.is_available():
        where = "Triton kernels on CUDA tensors"
    else:  # said once, here, rather than on every GEMM
        where = ("no CUDA here, so the emulated torch reference: quantise, dequantise, fp32 matmul; FP8 numerics, "
                 "no FP8 speed")
    log.info("FP8: %d linear layers run block-wise E4M3 GEMMs (%s); master weights stay %s.", len(swapped), where,
             next(model.parameters()).dtype)
    return swapped


# ---------------------------------------------------------------------------------------------- checkpoints
SCALE_SUFFIX = "weight_scale_inv"


def check_quantization_config(qc: dict, where: str) -> None:
    """Accepts the Hugging Face / DeepSeek FP8 format: fp8, E4M3, dynamic activations, 128x128 weight blocks."""
    problems = []
    if qc.get("quant_method") != "fp8":
        problems.append(f"quant_method is {qc.get('quant_method')!r}, only 'fp8' is supported")
    if qc.get("fmt", "e4m3") != "e4m3":
        problems.append(f"fmt is {qc.get('fmt')!r}, only 'e4m3' is supported")
    if list(qc.get("weight_block_size") or []) != [BLOCK, BLOCK]:
        problems.append(f"weight_block_size is {qc.get('weight_block_size')!r}, expected [{BLOCK}, {BLOCK}]")
    if qc.get("activation_scheme", "dynamic") != "dynamic":
        problems.append(f"activation_scheme is {qc.get('activation_scheme')!r}, only 'dynamic' is supported")
    if problems:
        raise ValueError(f"{where}: quantization_config is not a block-wise FP8 checkpoint this loader reads: "
                         f"{'; '.join(problems)}.")


def quantization_config() -> dict:
    """What a block-wise FP8 checkpoint's config.json says (DeepSeek-V3's release and vLLM's loader agree)."""
    return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
            "weight_block_size": [BLOCK, BLOCK]}


def dequantize_checkpoint(tensors: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """E4M3 weights with their `*.weight_scale_inv` -> fp32 weights (the master copy); other tensors as they are."""
    out = dict(tensors)
    for name in [n for n in tensors if n.endswith("." + SCALE_SUFFIX)]:
        weight_name = name[:-len(SCALE_SUFFIX)] + "weight"
        weight = tensors.get(weight_name)
        if weight is None:
            raise ValueError(f"{where}: {name} has no matching {weight_name}.")
        scale = out.pop(name).float()
        expected = (_cdiv(weight.shape[0], BLOCK), _cdiv(weight.shape[1], BLOCK))
        if tuple(scale.shape) != expected:
            raise ValueError(f"{where}: {name} has shape {tuple(scale.shape)}; {weight_name} {tuple(weight.shape)} "
                             f"in {BLOCK}x{BLOCK} blocks needs {expected}.")
        out[weight_name] = dequantize_blocks(weight, scale)
    unscaled = [n for n, t in out.items() if t.dtype == torch.float8_e4m3fn]
    if unscaled:
        raise ValueError(f"{where}: E4M3 tensors without a {SCALE_SUFFIX}: {unscaled[:8]}.")
    return out


def export_tensors(hf_state: dict[str, torch.Tensor], fp8_weights: set[str],
                   recipe: FP8Recipe) -> dict[str, torch.Tensor]:
    """A state dict (Hugging Face names) in the recipe's export format; `fp8_weights` names the FP8 layers' weights.

    master: unchanged. bf16: FP8 layers' weights as the FP8 GEMMs see them (quantised, dequantised), everything in
    bf16. fp8: FP8 layers' weights in E4M3 plus `weight_scale_inv`, the rest bf16. The router bias stays fp32.
    """
    if recipe.export == "master":
        return hf_state
    out = {}
    for name, tensor in hf_state.items():
        if name in fp8_weights:
            q, scale = quantize_blocks(tensor, recipe.power_of_two_scales)
            if recipe.export == "fp8":
                out[name], out[name[:-len("weight")] + SCALE_SUFFIX] = q, scale
                continue
            tensor = dequantize_blocks(q, scale)
        keep = not tensor.is_floating_point() or name.endswith("e_score_correction_bias")
        out[name] = tensor if keep else tensor.to(torch.bfloat16)
    return out


def fp8_weight_names(model: nn.Module) -> set[str]:
    """Our state-dict names of the model's FP8Linear weights."""
    return {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, FP8Linear)}


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """||approx - exact|| / ||exact|| (Frobenius), the measure the FP8 tests and benchmarks report."""
    exact = exact.detach().double()
    return float((approx.detach().double() - exact).norm() / exact.norm().clamp(min=math.ulp(1.0)))

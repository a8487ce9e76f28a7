"""Building blocks shared by attention, MoE and MTP: RMSNorm, the SwiGLU MLP and the linear-layer factory.

Shapes: D model dim, I MLP intermediate dim, "..." any leading dims.

RMSNorm:  y = w * x / sqrt(mean(x^2) + eps), computed in fp32 and cast back (as transformers and vLLM do).
SwiGLU:   y = W_down (silu(W_gate x) * (W_up x)).

`LinearFactory` is the one place projection layers are made. Each call says whether the GEMM is FP8-eligible
under DeepSeek-V3's mixed-precision recipe (attention and MLP/expert projections are; the router, embeddings,
output head and MTP's eh_proj are not), so an FP8 factory can later swap in its own layer without module globals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LinearFactory:
    """Makes bias-free projections initialised N(0, init_std^2); an FP8 variant overrides `__call__`."""

    init_std: float = 0.02

    def __call__(self, in_features: int, out_features: int, *, fp8_eligible: bool) -> nn.Module:
        layer = nn.Linear(in_features, out_features, bias=False)
        # Initialised here, in the constructor, so DeepSpeed's zero.Init sees final values before it partitions.
        nn.init.normal_(layer.weight, mean=0.0, std=self.init_std)
        return layer


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class SwiGLU(nn.Module):
    """Dense MLP, routed expert and shared experts alike (names gate_proj/up_proj/down_proj as on disk)."""

    def __init__(self, dim: int, hidden: int, linear: LinearFactory) -> None:
        super().__init__()
        self.gate_proj = linear(dim, hidden, fp8_eligible=True)
        self.up_proj = linear(dim, hidden, fp8_eligible=True)
        self.down_proj = linear(hidden, dim, fp8_eligible=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Float32Buffers(nn.Module):
    """Keeps the buffers named in `_float32_buffers` in fp32 through `.half()`, `.bfloat16()`, `.to(dtype)`.

    The router bias moves by ~1e-3 per step and rope frequencies span five decades; in bf16 the first update rounds
    away and the second loses position resolution. DeepSpeed's bf16 mode casts the whole module, hence this hook.
    """

    _float32_buffers: tuple[str, ...] = ()

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for name in self._float32_buffers:
            buf = getattr(self, name)
            if buf is not None and buf.is_floating_point() and buf.dtype != torch.float32:
                setattr(self, name, buf.float())
        return self

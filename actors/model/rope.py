"""Rotary position embedding for MLA's decoupled rope part: DeepSeek's interleaved layout and YaRN scaling.

Shapes: B batch, T tokens, H heads, R qk_rope_head_dim (even), R/2 rotation pairs.

Interleaved layout: dims (x0, x1), (x2, x3), ... form the pairs; pair j at position p is rotated by angle
p * inv_freq[j]:  (a, b) -> (a cos - b sin, a sin + b cos). (The "neox" layout pairs dim j with j + R/2 instead;
DeepSeek's checkpoints and vLLM's `is_neox_style=False` use the interleaved one.)

YaRN (rope_type "yarn", arXiv 2309.00071) with scale s = factor and original context L0:
  inv_freq_j = base^(-2j/R); the correction range [lo, hi] holds the pair indices whose wavelength spans between
  beta_fast and beta_slow rotations over L0 (floor/ceil rounded). A linear ramp over [lo, hi] blends
  interpolated frequencies (inv_freq / s, long wavelengths) into extrapolated ones (inv_freq, short wavelengths).
  Magnitude: cos/sin are multiplied by m(s, mscale) / m(s, mscale_all_dim), with m(s, a) = 0.1 a ln(s) + 1 (1 if
  s <= 1); the attention softmax scale is multiplied by m(s, mscale_all_dim)^2 (see `softmax_scale`).
  This follows DeepSeek's reference code and vLLM (the rollout engine). transformers agrees when both mscale and
  mscale_all_dim are set (DeepSeek's checkpoints set both) or neither; with only one set it uses m(s, 1) instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .layers import Float32Buffers


def _yarn_mscale(scale: float, mscale: float) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _correction_dim(rotations: float, dim: int, base: float, max_pos: int) -> float:
    """Pair-dimension index whose wavelength completes `rotations` turns over `max_pos` tokens."""
    return dim * math.log(max_pos / (rotations * 2 * math.pi)) / (2 * math.log(base))


def rope_frequencies(dim: int, rope: dict[str, Any]) -> tuple[torch.Tensor, float]:
    """Returns inv_freq [R/2] (fp32) and the cos/sin magnitude factor for `rope_parameters`."""
    base = float(rope["rope_theta"])
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    if rope["rope_type"] == "default":
        return inv_freq, 1.0
    scale = float(rope["factor"])
    original = int(rope["original_max_position_embeddings"])
    beta_fast, beta_slow = float(rope.get("beta_fast", 32)), float(rope.get("beta_slow", 1))
    lo = max(math.floor(_correction_dim(beta_fast, dim, base, original)), 0)
    hi = min(math.ceil(_correction_dim(beta_slow, dim, base, original)), dim - 1)
    if lo == hi:
        hi += 0.001  # the reference implementations nudge a zero-width ramp the same way
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo)).clamp(0, 1)
    extrapolate = 1 - ramp  # 1 for high-frequency pairs (kept), 0 for low-frequency ones (interpolated)
    inv_freq = inv_freq / scale * (1 - extrapolate) + inv_freq * extrapolate
    magnitude = _yarn_mscale(scale, float(rope.get("mscale", 1))) / _yarn_mscale(
        scale, float(rope.get("mscale_all_dim", 0)))
    return inv_freq, magnitude


def softmax_scale(qk_head_dim: int, rope: dict[str, Any]) -> float:
    """1/sqrt(d_qk), times YaRN's m(s, mscale_all_dim)^2 attention-temperature correction when scaling is on."""
    scale = qk_head_dim ** -0.5
    if rope["rope_type"] == "yarn" and rope.get("mscale_all_dim"):
        m = _yarn_mscale(float(rope["factor"]), float(rope["mscale_all_dim"]))
        scale = scale * m * m
    return scale


class RotaryEmbedding(Float32Buffers):
    """cos/sin tables for given positions: position_ids [B, T] -> (cos, sin) each [B, T, R/2], fp32."""

    _float32_buffers = ("inv_freq",)

    def __init__(self, dim: int, rope: dict[str, Any]) -> None:
        super().__init__()
        inv_freq, self.magnitude = rope_frequencies(dim, rope)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = position_ids.float()[..., None] * self.inv_freq
        return angles.cos() * self.magnitude, angles.sin() * self.magnitude


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates interleaved pairs of x [B, T, R] or [B, T, H, R] by cos/sin [B, T, R/2]; returns x's dtype."""
    if x.dim() == 4:
        cos, sin = cos[:, :, None], sin[:, :, None]
    a, b = x.float()[..., 0::2], x.float()[..., 1::2]
    rotated = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)

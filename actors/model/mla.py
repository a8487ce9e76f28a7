"""Multi-head Latent Attention (DeepSeek-V2/V3), with a training path and an absorbed, latent-cached path.

Shapes: B batch, T query tokens, S key tokens (cache length), D model dim, H heads, Q q_lora_rank,
C kv_lora_rank, N qk_nope_head_dim, R qk_rope_head_dim, V v_head_dim.

Queries:  q = W_qb RMSNorm(W_qa x)   (or q = W_q x when q_lora_rank is null), split per head into
          q_nope [H, N] and q_rope [H, R]; q_rope gets RoPE.
Keys/values come from one compressed latent per token:
          [c, k_rope] = W_kva x;  c = RMSNorm(c) [C];  k_rope [R] gets RoPE and is shared by every head;
          [k_nope, v] = W_kvb c, per head [N] and [V].
Score:    s_h(t, s) = (q_nope_h . k_nope_h(s) + q_rope_h . k_rope(s)) * softmax_scale.

Training path: expand k_nope and v for every token and run standard attention (SDPA).

Absorbed path (generation): W_kvb splits per head into W_uk [N, C] and W_uv [V, C]. Because
  q_nope_h . (W_uk,h c) = (W_uk,h^T q_nope_h) . c, queries are projected into the latent space once and
  attend directly over the cached latents c; the output is  o_h = W_uv,h (sum_s p_h(t, s) c(s)).
  The cache therefore stores only c [C] and k_rope [R] per token, shared by all heads, instead of
  H * (N + R + V) numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import DeepseekV3Config
from .layers import LinearFactory, RMSNorm
from .rope import apply_rope, softmax_scale


@dataclass
class LatentCache:
    """One layer's cache for the absorbed path: compressed latents and rope keys, preallocated to `capacity`."""

    latent: torch.Tensor
    """[B, S_max, C] RMS-normalised kv latents."""
    rope_key: torch.Tensor
    """[B, S_max, R] rope keys, already rotated."""
    length: int = 0
    absorbed: tuple[torch.Tensor, torch.Tensor] | None = None
    """The layer's W_uk [H, N, C] and W_uv [H, V, C], split from kv_b_proj once per generation."""

    @classmethod
    def empty(cls, batch: int, capacity: int, cfg: DeepseekV3Config, like: torch.Tensor) -> "LatentCache":
        return cls(like.new_zeros(batch, capacity, cfg.kv_lora_rank),
                   like.new_zeros(batch, capacity, cfg.qk_rope_head_dim))

    def append(self, latent: torch.Tensor, rope_key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes T new entries; returns the filled prefix [B, S, C] and [B, S, R] (S = old length + T)."""
        end = self.length + latent.shape[1]
        if end > self.latent.shape[1]:
            raise ValueError(f"Latent cache holds {self.latent.shape[1]} tokens; {end} were requested. "
                             "Allocate the cache with room for the prompt plus all new tokens.")
        self.latent[:, self.length:end] = latent
        self.rope_key[:, self.length:end] = rope_key
        self.length = end
        return self.latent[:, :end], self.rope_key[:, :end]


def attention_mask_for(query_slots: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
    """Causal mask [B, T, S] over cache slots: query slot q may see key slot s <= q that holds a real token.

    A query always sees itself, so a padded query row is never fully masked (which would give NaN in softmax).
    """
    key_slots = torch.arange(key_valid.shape[1], device=key_valid.device)
    causal = key_slots[None, :] <= query_slots[:, None]  # [T, S]
    return (causal[None] & key_valid[:, None, :]) | (key_slots[None, :] == query_slots[:, None])[None]


class MultiHeadLatentAttention(nn.Module):
    def __init__(self, cfg: DeepseekV3Config, linear: LinearFactory) -> None:
        super().__init__()
        H, D = cfg.num_attention_heads, cfg.hidden_size
        self.num_heads, self.nope_dim, self.rope_dim = H, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        self.v_dim, self.latent_dim = cfg.v_head_dim, cfg.kv_lora_rank
        if cfg.q_lora_rank is None:
            self.q_proj = linear(D, H * cfg.qk_head_dim, fp8_eligible=True)
        else:
            self.q_a_proj = linear(D, cfg.q_lora_rank, fp8_eligible=True)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps)
            self.q_b_proj = linear(cfg.q_lora_rank, H * cfg.qk_head_dim, fp8_eligible=True)
        self.kv_a_proj_with_mqa = linear(D, cfg.kv_lora_rank + cfg.qk_rope_head_dim, fp8_eligible=True)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.rms_norm_eps)
        self.kv_b_proj = linear(cfg.kv_lora_rank, H * (cfg.qk_nope_head_dim + cfg.v_head_dim), fp8_eligible=True)
        self.o_proj = linear(H * cfg.v_head_dim, D, fp8_eligible=True)
        self.softmax_scale = softmax_scale(cfg.qk_head_dim, cfg.rope_parameters)

    def _queries(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D] -> q_nope [B, T, H, N], q_rope [B, T, H, R] (rotated)."""
        q = self.q_proj(x) if hasattr(self, "q_proj") else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.unflatten(-1, (self.num_heads, self.nope_dim + self.rope_dim))
        q_nope, q_rope = q.split([self.nope_dim, self.rope_dim], dim=-1)
        return q_nope, apply_rope(q_rope, cos, sin)

    def _latents(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D] -> latent [B, T, C] (normalised), rope key [B, T, R] (rotated)."""
        latent, k_rope = self.kv_a_proj_with_mqa(x).split([self.latent_dim, self.rope_dim], dim=-1)
        return self.kv_a_layernorm(latent), apply_rope(k_rope, cos, sin)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: LatentCache | None = None) -> torch.Tensor:
        """x [B, T, D]; mask [B, T, S] bool (True = may attend) or None for plain causal. Returns [B, T, D].

        Without a cache this is the training path; with one, the absorbed path (S = cached + T tokens).
        """
        if cache is not None:
            return self._absorbed(x, cos, sin, mask, cache)
        B, T, _ = x.shape
        q_nope, q_rope = self._queries(x, cos, sin)
        latent, k_rope = self._latents(x, cos, sin)
        k_nope, v = self.kv_b_proj(latent).unflatten(-1, (self.num_heads, -1)).split([self.nope_dim, self.v_dim], -1)
        q = torch.cat([q_nope, q_rope], dim=-1).transpose(1, 2)  # [B, H, T, N+R]
        k = torch.cat([k_nope, k_rope[:, :, None].expand(-1, -1, self.num_heads, -1)], dim=-1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), attn_mask=None if mask is None else mask[:, None],
                                             is_causal=mask is None, scale=self.softmax_scale)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.num_heads * self.v_dim))

    def _absorbed(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                  cache: LatentCache) -> torch.Tensor:
        q_nope, q_rope = self._queries(x, cos, sin)
        latents, rope_keys = cache.append(*self._latents(x, cos, sin))  # [B, S, C], [B, S, R]
        if cache.absorbed is None:
            cache.absorbed = self._split_kv_b(x)
        w_uk, w_uv = cache.absorbed  # [H, N, C], [H, V, C]
        q_latent = torch.einsum("bthn,hnc->bthc", q_nope, w_uk)
        scores = (torch.einsum("bthc,bsc->bhts", q_latent, latents)
                  + torch.einsum("bthr,bsr->bhts", q_rope, rope_keys)) * self.softmax_scale
        scores = scores.float().masked_fill(~mask[:, None], float("-inf"))
        probs = scores.softmax(dim=-1).to(x.dtype)
        out_latent = torch.einsum("bhts,bsc->bthc", probs, latents)
        out = torch.einsum("bthc,hvc->bthv", out_latent, w_uv)
        return self.o_proj(out.flatten(2))

    def _split_kv_b(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W_kvb as per-head W_uk [H, N, C] and W_uv [H, V, C].

        Read by calling the projection on the identity rather than through `.weight`, so the dense matrix comes out
        whatever holds it: a DeepSpeed ZeRO-3 partition (gathered by the call's hooks) or a future FP8 layer.
        """
        eye = torch.eye(self.latent_dim, dtype=like.dtype, device=like.device)
        w = self.kv_b_proj(eye).T.unflatten(0, (self.num_heads, self.nope_dim + self.v_dim))
        return w[:, :self.nope_dim], w[:, self.nope_dim:]

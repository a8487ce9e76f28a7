"""One pre-norm transformer block of DeepSeek-V3, and the runner that adds checkpointing and load recording.

Shapes: B batch, T query tokens, S key tokens, D model dim, R/2 rope pairs.

  h = h + MLA(RMSNorm(h));  h = h + FFN(RMSNorm(h)),
  FFN = dense SwiGLU for the first `first_k_dense_replace` layers, DeepSeekMoE after (MTP blocks included).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import DeepseekV3Config
from .layers import LinearFactory, RMSNorm, SwiGLU
from .mla import LatentCache, MultiHeadLatentAttention
from .moe import MoE, MoEStats


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DeepseekV3Config, layer_idx: int, linear: LinearFactory) -> None:
        super().__init__()
        self.self_attn = MultiHeadLatentAttention(cfg, linear)
        self.mlp = (MoE(cfg, layer_idx, linear) if cfg.is_moe_layer(layer_idx)
                    else SwiGLU(cfg.hidden_size, cfg.intermediate_size, linear))
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                token_mask: torch.Tensor | None = None,
                cache: LatentCache | None = None) -> tuple[torch.Tensor, MoEStats | None]:
        """h [B, T, D]; cos/sin [B, T, R/2]; mask [B, T, S] bool or None (causal). Returns h and MoE stats."""
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask, cache)
        x = self.post_attention_layernorm(h)
        if isinstance(self.mlp, MoE):
            y, stats = self.mlp(x, token_mask)
            return h + y, stats
        return h + self.mlp(x), None


def run_block(block: DecoderLayer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
              token_mask: torch.Tensor | None, *, checkpointing: bool,
              cache: LatentCache | None = None) -> tuple[torch.Tensor, MoEStats | None]:
    """Runs a block, optionally under activation checkpointing, and records its expert load for balancing.

    Loads are recorded here, outside the checkpointed call, so the recomputation during backward does not count
    tokens twice; and only for passes that will be backpropagated, so evaluation and logprob passes do not move
    the router bias.
    """
    trains = block.training and torch.is_grad_enabled()
    if checkpointing and trains and cache is None:
        h, stats = checkpoint(block, h, cos, sin, mask, token_mask, use_reentrant=False)
    else:
        h, stats = block(h, cos, sin, mask, token_mask, cache)
    if stats is not None and trains:
        block.mlp.gate.record_load(stats.load)
    return h, stats

"""DeepSeekMoE: shared experts plus top-K routed experts, with token dispatch sorted by expert.

Shapes: B batch, T tokens, N = B*T, D model dim, E routed experts, K experts per token, M = N*K routed slots.

  y = shared(x) + sum_k w_k * expert_{idx_k}(x)          (w, idx from router.TopKRouter)

Dispatch: the M (token, slot) pairs are sorted by expert id (stable argsort), so each expert reads one contiguous
slice of the gathered tokens; expert outputs are scaled by their gate weight and summed back into their tokens
with one index_add. The only Python loop is over experts, and it visits every expert every call, even one with no
tokens: under DeepSpeed ZeRO-3 each module call gathers its parameters collectively, so all ranks must make the
same calls in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .balancing import sequence_balance_loss
from .config import DeepseekV3Config
from .layers import LinearFactory, SwiGLU
from .router import TopKRouter


@dataclass
class MoEStats:
    load: torch.Tensor
    """[E] tokens routed to each expert in this call (padding excluded), detached."""
    aux_loss: torch.Tensor | None
    """Sequence-wise balance loss (already scaled by aux_loss_alpha), or None when off."""


def dispatch_sorted(x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                    experts: nn.ModuleList) -> torch.Tensor:
    """x [N, D], indices/weights [N, K] -> sum_k weights[:, k] * experts[indices[:, k]](x)  [N, D]."""
    top_k = indices.shape[1]
    flat = indices.flatten()  # [M], slot m belongs to token m // K
    order = flat.argsort(stable=True)
    token_of_slot = order // top_k
    counts = torch.bincount(flat, minlength=len(experts)).tolist()  # split sizes must be host ints (one sync)
    routed = x[token_of_slot].split(counts)  # one contiguous slice per expert
    out = torch.cat([expert(chunk) for expert, chunk in zip(experts, routed)])
    # Weighted in fp32 like the reference implementations, so bf16 runs round once, after the product.
    out = (out.float() * weights.flatten()[order, None]).to(x.dtype)
    return torch.zeros_like(x).index_add_(0, token_of_slot, out)


class MoE(nn.Module):
    def __init__(self, cfg: DeepseekV3Config, layer_idx: int, linear: LinearFactory) -> None:
        super().__init__()
        self.aux_loss_alpha = cfg.aux_loss_alpha
        self.gate = TopKRouter(cfg, layer_idx)
        self.experts = nn.ModuleList(
            SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size, linear) for _ in range(cfg.n_routed_experts))
        self.shared_experts = (SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts, linear)
                               if cfg.n_shared_experts else None)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, MoEStats]:
        """x [B, T, D]; token_mask [B, T] bool marks real (non-padding) tokens. Returns y [B, T, D] and stats."""
        B, T, D = x.shape
        flat = x.reshape(B * T, D)
        weights, indices, scores = self.gate(flat)
        y = dispatch_sorted(flat, indices, weights, self.experts).view(B, T, D)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)
        with torch.no_grad():
            real = indices if token_mask is None else indices[token_mask.reshape(-1)]
            load = torch.bincount(real.flatten(), minlength=len(self.experts))
        aux = None
        if self.aux_loss_alpha > 0 and self.training:
            mask = torch.ones(B, T, dtype=torch.bool, device=x.device) if token_mask is None else token_mask
            aux = sequence_balance_loss(scores.view(B, T, -1), indices.view(B, T, -1), mask, self.aux_loss_alpha)
        return y, MoEStats(load=load, aux_loss=aux)

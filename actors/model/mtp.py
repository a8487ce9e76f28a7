"""Multi-token prediction (DeepSeek-V3 report, sec. 2.2): D sequential modules, module k predicting token t+k+1.

Shapes: B batch, T tokens, D model dim, V vocab.

Module k (1-based) at position i combines the previous depth's representation with the embedding of token i+k:
    h'_i^k = W_eh [RMSNorm_e(Emb(t_{i+k})) ; RMSNorm_h(h_i^{k-1})]         (embedding first, as in vLLM's DeepSeek MTP)
    h_i^k  = RMSNorm_k(Block_k(h'^k))_i,   logits_i^k = Head(h_i^k)  -> predicts t_{i+k+1}
h^0 is the main model's final (normalised) hidden state; Emb and Head are the main model's, shared.
Loss:  L_MTP = (lambda / D) sum_k CE(logits^k, t_{.+k+1});  lambda = config.mtp_loss_weight.
The modules are used only for this training loss; inference ignores them (no speculative decoding here).

On disk module k lives at `model.layers.{num_hidden_layers + k - 1}.*` (see names.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .block import DecoderLayer, run_block
from .config import DeepseekV3Config
from .layers import LinearFactory, RMSNorm
from .moe import MoEStats

IGNORE_INDEX = -100


def shift_left(x: torch.Tensor, k: int, fill: int | bool) -> torch.Tensor:
    """x [B, T] -> y with y[:, i] = x[:, i + k], the last k positions set to `fill`."""
    return torch.cat([x[:, k:], x.new_full((x.shape[0], min(k, x.shape[1])), fill)], dim=1)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits [B, T, V] at position i against labels[:, i + 1] (IGNORE_INDEX skipped)."""
    targets = labels[:, 1:].reshape(-1)
    total = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets,
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)


class MTPModule(nn.Module):
    def __init__(self, cfg: DeepseekV3Config, depth: int, linear: LinearFactory) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.enorm = RMSNorm(D, cfg.rms_norm_eps)
        self.hnorm = RMSNorm(D, cfg.rms_norm_eps)
        self.eh_proj = linear(2 * D, D, fp8_eligible=False)
        self.block = DecoderLayer(cfg, cfg.num_hidden_layers + depth - 1, linear)
        self.norm = RMSNorm(D, cfg.rms_norm_eps)  # `shared_head.norm` on disk

    def forward(self, previous: torch.Tensor, embedded: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, token_mask: torch.Tensor | None,
                checkpointing: bool) -> tuple[torch.Tensor, MoEStats | None]:
        """previous h^{k-1} [B, T, D], embedded Emb(t_{i+k}) [B, T, D] -> normalised h^k [B, T, D] and MoE stats."""
        h = self.eh_proj(torch.cat([self.enorm(embedded), self.hnorm(previous)], dim=-1))
        h, stats = run_block(self.block, h, cos, sin, mask, token_mask, checkpointing=checkpointing)
        return self.norm(h), stats


def mtp_loss(modules: nn.ModuleList, hidden: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor,
             embed: nn.Embedding, head: nn.Module, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
             token_mask: torch.Tensor | None, checkpointing: bool) -> tuple[torch.Tensor, list[MoEStats]]:
    """Mean over depths of the MTP cross-entropy (unweighted), and the MoE stats of the MTP blocks.

    hidden [B, T, D] is the main model's final normalised state; labels [B, T] are aligned with input_ids as for
    the main loss (position i's logits predict labels[:, i + 1]), so depth k's targets are labels shifted by k.
    """
    previous, losses, stats = hidden, [], []
    if token_mask is None:
        token_mask = torch.ones_like(input_ids, dtype=torch.bool)
    for k, module in enumerate(modules, start=1):
        # The last k positions embed no real token; keep them out of the expert loads and the balance loss.
        shifted_mask = shift_left(token_mask, k, False)
        previous, s = module(previous, embed(shift_left(input_ids, k, 0)), *rope, mask, shifted_mask, checkpointing)
        losses.append(next_token_loss(head(previous), shift_left(labels, k, IGNORE_INDEX)))
        if s is not None:
            stats.append(s)
    return torch.stack(losses).mean(), stats

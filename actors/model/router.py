"""DeepSeek-V3 router: sigmoid affinities, bias-corrected group-limited top-k selection, unbiased gate weights.

Shapes: N tokens, D model dim, E routed experts, G groups (n_group), E/G experts per group, K experts per token.

  s = sigmoid(W_gate x)                          [N, E]  affinities, fp32
  c = s + b                                      [N, E]  b = e_score_correction_bias, used for *selection only*
  group score_g = sum of the top-2 c in group g  [N, G]; keep the topk_group best groups, mask the rest to -inf
  idx = top-K of the masked c                    [N, K]
  w = s[idx] / sum(s[idx])  (if norm_topk_prob) * routed_scaling_factor   [N, K]

The bias b is a buffer, not a parameter: no gradient reaches it. It is moved by the auxiliary-loss-free balancing
rule (balancing.update_router_bias) from the expert loads each router accumulates in `load_accumulator` during
forward passes that will be backpropagated (training mode with grad enabled), i.e. one optimizer step's tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DeepseekV3Config
from .layers import Float32Buffers


def select_experts(choice: torch.Tensor, n_group: int, topk_group: int, top_k: int) -> torch.Tensor:
    """Group-limited top-k over bias-corrected scores choice [N, E]; returns expert indices [N, K]."""
    if n_group > 1:
        grouped = choice.unflatten(-1, (n_group, -1))  # [N, G, E/G]
        group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # [N, G]
        keep = torch.zeros_like(group_scores, dtype=torch.bool)
        keep.scatter_(1, group_scores.topk(topk_group, dim=-1).indices, True)
        choice = grouped.masked_fill(~keep[..., None], float("-inf")).flatten(1)
    return choice.topk(top_k, dim=-1).indices


class TopKRouter(Float32Buffers):
    _float32_buffers = ("e_score_correction_bias",)

    def __init__(self, cfg: DeepseekV3Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.top_k, self.n_group, self.topk_group = cfg.num_experts_per_tok, cfg.n_group, cfg.topk_group
        self.norm_topk_prob, self.routed_scaling_factor = cfg.norm_topk_prob, cfg.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        nn.init.normal_(self.weight, std=cfg.initializer_range)
        self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts))
        # Integer counts: exact over many micro-batches and untouched by dtype casts of the module.
        self.register_buffer("load_accumulator", torch.zeros(cfg.n_routed_experts, dtype=torch.long),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N, D] -> gate weights [N, K] fp32, expert indices [N, K], affinities s [N, E] fp32."""
        scores = F.linear(x.float(), self.weight.float()).sigmoid()
        with torch.no_grad():
            indices = select_experts(scores + self.e_score_correction_bias, self.n_group, self.topk_group, self.top_k)
        weights = scores.gather(1, indices)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * self.routed_scaling_factor, indices, scores

    @torch.no_grad()
    def record_load(self, load: torch.Tensor) -> None:
        """Adds one forward's tokens-per-expert counts [E] to the step's accumulator."""
        self.load_accumulator += load.to(self.load_accumulator)

    @torch.no_grad()
    def take_load(self) -> torch.Tensor:
        """Returns the accumulated counts [E] and resets them."""
        load = self.load_accumulator.clone()
        self.load_accumulator.zero_()
        return load

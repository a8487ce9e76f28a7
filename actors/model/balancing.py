"""Expert load balancing for DeepSeekMoE: the auxiliary-loss-free bias update, the sequence-wise balance loss and
the expert-load metrics.

Shapes: B batch, T tokens, E routed experts, K experts per token, L MoE layers.

Auxiliary-loss-free balancing (DeepSeek-V3 report, sec. 2.1.2). After every optimizer step, for each MoE layer,
with load_i = tokens routed to expert i during that step (all micro-batches, all data-parallel ranks):
    b_i <- b_i + gamma * sign(mean(load) - load_i)
so overloaded experts become less likely to be *selected*; the gate weights still come from the unbiased scores,
and no gradient flows through b. gamma is the bias update speed (1e-3 for most of DeepSeek-V3's pre-training).

Sequence-wise balance loss (same section, eq. 17-20), optional and tiny (alpha ~ 1e-4), per sequence of T tokens:
    s'_{i,t} = s_{i,t} / sum_j s_{j,t}              (affinities normalised over all E experts)
    f_i = E / (K T) * #{t : i in top-K(t)}           P_i = (1/T) sum_t s'_{i,t}
    L_bal = alpha * sum_i f_i P_i                     (averaged over the batch's sequences)
f is a count (no gradient); the loss pushes the affinities P of overloaded experts down.

Use from a trainer:
    loss = model(input_ids, attention_mask=mask, labels=labels).loss   # includes L_bal when aux_loss_alpha > 0
    loss.backward(); optimizer.step()
    metrics.update(update_router_bias(model, gamma))                     # every optimizer step, on every rank
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .router import TopKRouter


def sequence_balance_loss(scores: torch.Tensor, indices: torch.Tensor, token_mask: torch.Tensor,
                          alpha: float) -> torch.Tensor:
    """scores [B, T, E] sigmoid affinities, indices [B, T, K], token_mask [B, T] bool -> alpha * mean_b L_bal."""
    E, K = scores.shape[-1], indices.shape[-1]
    real = token_mask.to(scores.dtype)
    n_tokens = real.sum(dim=1)  # [B]
    normalised = scores / scores.sum(dim=-1, keepdim=True)
    P = (normalised * real[..., None]).sum(dim=1) / n_tokens.clamp(min=1)[:, None]  # [B, E]
    counts = torch.zeros_like(P).scatter_add_(1, indices.flatten(1), real[..., None].expand(-1, -1, K).flatten(1))
    f = counts * E / (K * n_tokens.clamp(min=1)[:, None])
    per_sequence = (f * P).sum(dim=-1)
    has_tokens = n_tokens > 0  # an all-padding row has no balance to measure
    return alpha * per_sequence[has_tokens].sum() / has_tokens.sum().clamp(min=1)


def routers(model: nn.Module) -> list[TopKRouter]:
    """Every MoE router of the model (main layers and MTP blocks), in module order."""
    return [m for m in model.modules() if isinstance(m, TopKRouter)]


def _step_loads(model: nn.Module, process_group, reset: bool) -> list[tuple[TopKRouter, torch.Tensor]]:
    found = routers(model)
    if not found:
        return []
    loads = torch.stack([r.take_load() if reset else r.load_accumulator.clone() for r in found]).float()  # [L, E]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(process_group) > 1:
        # One collective for all layers; every rank then applies the same update, keeping biases identical.
        dist.all_reduce(loads, group=process_group)
    return list(zip(found, loads))


@torch.no_grad()
def update_router_bias(model: nn.Module, gamma: float, process_group=None) -> dict[str, float]:
    """Applies b_i += gamma * sign(mean(load) - load_i) to each router from the loads since the last call.

    Call once after every optimizer step on every data-parallel rank (the loads are all-reduced over
    `process_group`, default the whole world). Returns that step's expert-load metrics and resets the counts.
    A router that saw no tokens this step (e.g. an MTP block when the MTP loss is off) is left unchanged.
    """
    if gamma < 0:
        raise ValueError(f"The router bias update speed gamma must be >= 0; got {gamma}.")
    step = _step_loads(model, process_group, reset=True)
    for router, load in step:
        if load.sum() > 0:
            router.e_score_correction_bias += gamma * torch.sign(load.mean() - load).to(router.e_score_correction_bias)
    return _metrics(step)


@torch.no_grad()
def expert_load_metrics(model: nn.Module, process_group=None) -> dict[str, float]:
    """The metrics of the loads accumulated since the last bias update, without consuming them."""
    return _metrics(_step_loads(model, process_group, reset=False))


def max_over_mean(load: torch.Tensor) -> float:
    """Imbalance of one layer's load [E]: 1.0 is perfectly even, E means everything went to one expert."""
    return float(load.max() / load.mean().clamp(min=1e-12))


def _metrics(step: list[tuple[TopKRouter, torch.Tensor]]) -> dict[str, float]:
    """moe/* step metrics: imbalance averaged and worst over layers, per-layer imbalance, bias magnitude."""
    active = [(r, load) for r, load in step if load.sum() > 0]
    if not active:
        return {}
    ratios = {r.layer_idx: max_over_mean(load) for r, load in active}
    out = {
        "moe/load_max_over_mean": sum(ratios.values()) / len(ratios),
        "moe/load_max_over_mean_worst": max(ratios.values()),
        "moe/load_min_over_mean": sum(float(load.min() / load.mean()) for _, load in active) / len(active),
        "moe/router_bias_abs_mean": sum(float(r.e_score_correction_bias.abs().mean()) for r, _ in active) / len(active),
    }
    out.update({f"moe/layer{idx}/load_max_over_mean": v for idx, v in ratios.items()})
    return out

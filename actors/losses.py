"""GRPO's per-token loss terms and the aggregations that turn them into one scalar: the trainer's own loss math
(``PolicyTrainer.rl_step`` calls ``grpo_loss`` on every micro-batch). Pure PyTorch.

Shape legend: B sequences, T response positions (right-padded), V vocabulary. ``mask`` [B, T] is True on the
tokens that are trained: response tokens, minus padding and whatever the batch shaping masked out (truncated
completions, see ``sampling.mask_truncated``). Values at masked-out positions never reach the loss or its
gradient, even when they are garbage (inf, NaN-producing).

Clipped surrogate (PPO, with DAPO's decoupled clip range). For token t of sequence i with advantage A_i:

    r_it = exp(logp_it - old_it)                                     new/old probability ratio
    L_it = -min(r_it * A_i,  clip(r_it, 1 - eps_low, 1 + eps_high) * A_i)

The min takes the clipped branch exactly when it is the pessimistic one: A > 0 and r > 1 + eps_high, or A < 0
and r < 1 - eps_low. There L is constant in logp, so those tokens get no gradient; "clip fraction" counts them.
``eps_high > eps_low`` is DAPO's clip-higher: it lets unlikely tokens with positive advantage grow further,
which counters entropy collapse. With one optimizer step per rollout batch ``old == logp`` (r = 1) and the clip
never acts; pass ``old_logprobs=None`` then and the current logprobs, detached, are used.

KL to a frozen reference policy, per token, from samples of the current policy (Schulman, "Approximating KL
divergence", 2020), with d = ref - logp:

    k1 = -d = logp - ref                 unbiased for KL(pi || ref), high variance, can be negative
    k3 = exp(d) - d - 1  >= 0            unbiased, low variance (the GRPO paper's choice)

Entropy: H_t = logsumexp(z_t) - sum_v softmax(z_t)_v z_{t,v} with z = logits / temperature, computed in chunks
of T (see ``entropy_from_logits``). The loss subtracts ``entropy_coef * H``: a bonus for staying exploratory.

Truncated importance sampling (TIS). The rollout engine (vLLM: other kernels, other precision) samples from a
slightly different distribution than the trainer computes, so the trainer's "on-policy" gradient is in fact
off-policy. Yao et al., "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training" (2025; verl's
``tis_imp_ratio_cap``) reweight each token by

    w_it = min(exp(old_it - rollout_it), C)        detached; old = trainer logprob at the sampling weights

and multiply the surrogate by it. The cap C bounds the variance that a token vLLM found unlikely would add.

Aggregation of per-token values x_it over the trained tokens (n_i = trained tokens of sequence i; a sequence
with n_i = 0 takes no part):

    token_mean            sum_i sum_t x_it / sum_i n_i                  (DAPO; every token weighs the same)
    seq_mean_token_mean   sum_i (sum_t x_it / n_i) / #sequences         (the GRPO paper; every sequence the same)
    seq_mean_token_sum    sum_i (sum_t x_it / C) / #sequences           (Dr.GRPO with C = the generation budget,
                                                                         a constant; C = 1 when not given)

Distributed use: an exact global mean across ranks and micro-batches. Every aggregation is (a sum over this
micro-batch) / (a count over the whole optimizer step). ``aggregate_parts`` returns the two halves and
``loss_normaliser`` counts the denominator; pass the *global* count as ``normaliser`` and the micro-batch losses
simply add up to the global aggregate. With DeepSpeed (which divides each micro-batch loss by grad_accum and
averages gradients over ranks), per optimizer step:

    norm = loss_normaliser(step_mask, agg)        # the mini-batch's mask over ALL ranks (driver-side), or the
                                                  # all-reduced sum of each rank's loss_normaliser(...)
    for micro-batch on this rank:
        loss, metrics = policy_loss(..., agg=agg, normaliser=norm)
        engine.backward(loss * grad_accum * world_size)   # undo DeepSpeed's 1/grad_accum and rank mean
        engine.step()

This is the same scaling as ``PolicyTrainer.sft_step`` (token sum * grad_accum * world / global_tokens).
The count must be taken on the final loss mask, after truncated completions are masked out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import get_args

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from actors.types import KLEstimator, LossAgg, LossSettings


# ---------------------------------------------------------------------------------------------- aggregation
def _check_agg(agg: str) -> None:
    if agg not in get_args(LossAgg):
        raise ValueError(f"Unknown loss aggregation '{agg}'; choose one of {', '.join(get_args(LossAgg))}.")


def loss_normaliser(mask: Tensor, agg: LossAgg) -> int:
    """The denominator of ``agg`` for these sequences: trained tokens (token_mean) or sequences with at least
    one trained token (the seq_mean modes). Sum it over every micro-batch of every rank for the global one."""
    _check_agg(agg)
    mask = mask.bool()
    if agg == "token_mean":
        return int(mask.sum())
    return int(mask.any(dim=-1).sum())


def aggregate_parts(values: Tensor, mask: Tensor, agg: LossAgg, token_sum_norm: float | None = None
                    ) -> tuple[Tensor, int]:
    """(numerator, local denominator) of ``agg`` over values [B, T]; numerator / denominator is the local
    aggregate, and numerators of disjoint parts of a batch add up."""
    _check_agg(agg)
    mask = mask.bool()
    # masked_fill, not multiply: 0 * inf at a padded position would be NaN.
    values = values.masked_fill(~mask, 0.0)
    if agg == "token_mean":
        return values.sum(), int(mask.sum())
    token_sums = values.sum(dim=-1)
    lengths = mask.sum(dim=-1)
    if agg == "seq_mean_token_mean":
        return (token_sums / lengths.clamp(min=1)).sum(), int((lengths > 0).sum())
    return token_sums.sum() / (token_sum_norm or 1.0), int((lengths > 0).sum())


def aggregate(values: Tensor, mask: Tensor, agg: LossAgg, normaliser: float | None = None,
              token_sum_norm: float | None = None) -> Tensor:
    """Reduce values [B, T] to a scalar. ``normaliser`` None: the local mean of these sequences; otherwise the
    global count from ``loss_normaliser`` (then the result is this part's share of the global mean)."""
    total, local = aggregate_parts(values, mask, agg, token_sum_norm)
    if normaliser is not None and normaliser <= 0:
        raise ValueError(f"The loss normaliser must be a positive count of tokens or sequences, not {normaliser}.")
    denominator = local if normaliser is None else normaliser
    return total / denominator if denominator else total  # an empty mask gives 0, with a graph


# ---------------------------------------------------------------------------------------------- loss terms
def clipped_surrogate(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                      eps_low: float, eps_high: float) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's per-token loss with ratio clip [1 - eps_low, 1 + eps_high].

    Returns (loss [B, T], ratio [B, T], clipped [B, T] bool: trained tokens where the clipped branch is taken).
    ``advantages`` is [B] (one per sequence) or [B, T].
    """
    # Zero the log-ratio off the mask so exp() cannot overflow there and poison the backward pass.
    log_ratio = (logprobs - old_logprobs).masked_fill(~mask.bool(), 0.0)
    ratio = torch.exp(log_ratio)
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    # Strict >: where both branches agree the unclipped one is taken, so its gradient flows.
    take_clipped = (clipped > unclipped) & mask.bool()
    return torch.where(take_clipped, clipped, unclipped), ratio, take_clipped


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator) -> Tensor:
    """Per-token estimate [B, T] of KL(pi || ref) from tokens sampled by pi (see the module docstring)."""
    if estimator == "k1":
        return logprobs - ref_logprobs
    if estimator == "k3":
        # Bound the exponent: beyond |d| = 20 the term is already ~5e8 and the policy is far off anyway.
        d = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
        return torch.exp(d) - d - 1.0
    raise ValueError(f"Unknown KL estimator '{estimator}'; choose one of {', '.join(get_args(KLEstimator))}.")


def tis_weights(old_logprobs: Tensor, rollout_logprobs: Tensor, cap: float) -> Tensor:
    """Truncated importance weights [B, T]: min(exp(old - rollout), cap), detached (a weight, not a path)."""
    if cap <= 0:
        raise ValueError(f"The TIS cap must be positive, not {cap}.")
    # Clamp in log space first: exp of a huge difference at a padded position would be inf.
    log_w = (old_logprobs - rollout_logprobs).detach().clamp(max=math.log(cap))
    return torch.exp(log_w)


# ---------------------------------------------------------------------------------------------- from logits
def _chunked(fn: Callable[..., Tensor], logits: Tensor, *others: Tensor, chunk_size: int) -> Tensor:
    """Apply fn over chunks of T. With autograd on, each chunk is recomputed in backward (checkpoint), so only
    one [B, chunk, V] float32 temporary is alive at a time instead of all of [B, T, V]."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}.")
    parts = zip(logits.split(chunk_size, dim=1), *(o.split(chunk_size, dim=1) for o in others), strict=True)
    use_checkpoint = torch.is_grad_enabled() and logits.requires_grad
    out = [checkpoint(fn, *p, use_reentrant=False) if use_checkpoint else fn(*p) for p in parts]
    return torch.cat(out, dim=1)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0, chunk_size: int = 128) -> Tensor:
    """Per-token entropy [B, T] of softmax(logits / temperature), logits [B, T, V] in any float dtype.

    Memory: a full float32 softmax would be B*T*V*4 bytes (8 GiB at B=16, T=1k, V=128k); chunking over T holds
    B*chunk*V at a time, forward and backward, at the price of one extra softmax per chunk in backward.
    """

    def chunk_entropy(z: Tensor) -> Tensor:
        z = z.float() / temperature
        return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(dim=-1)

    return _chunked(chunk_entropy, logits, chunk_size=chunk_size)


def token_logprobs(logits: Tensor, targets: Tensor, temperature: float = 1.0, chunk_size: int = 128) -> Tensor:
    """log softmax(logits / temperature)[target] per position: logits [B, T, V], targets [B, T] -> [B, T] float32.

    Use the rollout's sampling temperature, so the trainer's logprobs describe the distribution that was
    sampled (and are comparable with the engine's when it reports processed logprobs). Chunked as above.
    """

    def chunk_logprobs(z: Tensor, t: Tensor) -> Tensor:
        z = z.float() / temperature
        return z.gather(-1, t.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)

    return _chunked(chunk_logprobs, logits, targets, chunk_size=chunk_size)


# ---------------------------------------------------------------------------------------------- the loss
@torch.no_grad()
def _metrics(ratio: Tensor, log_ratio: Tensor, clipped: Tensor, mask: Tensor) -> dict[str, float]:
    """Local token means over this micro-batch; ``tokens`` lets a caller average them exactly across parts."""
    tokens = int(mask.sum())
    n = max(tokens, 1)
    # k3 of old -> new: an always non-negative approximation of KL(old || new) from tokens sampled by old.
    approx_kl = (torch.exp(log_ratio) - 1.0 - log_ratio).masked_fill(~mask, 0.0).sum() / n
    return {"tokens": float(tokens), "clip_frac": float(clipped.sum()) / n, "approx_kl": float(approx_kl),
            "ratio_mean": float(ratio.masked_fill(~mask, 0.0).sum()) / n}


def _token_mean(x: Tensor, mask: Tensor) -> float:
    return float(x.detach().masked_fill(~mask, 0.0).sum()) / max(int(mask.sum()), 1)


def policy_loss(logprobs: Tensor, old_logprobs: Tensor | None, advantages: Tensor, mask: Tensor,
                eps_low: float = 0.2, eps_high: float = 0.28, agg: LossAgg = "token_mean",
                normaliser: float | None = None, *, token_sum_norm: float | None = None,
                ref_logprobs: Tensor | None = None, kl_coef: float = 0.0, kl_estimator: KLEstimator = "k3",
                entropy: Tensor | None = None, entropy_coef: float = 0.0,
                rollout_logprobs: Tensor | None = None, tis_cap: float | None = None,
                ) -> tuple[Tensor, dict[str, float]]:
    """The GRPO loss of one micro-batch: aggregate(w * L_clip + kl_coef * KL - entropy_coef * H).

    logprobs [B, T] (with grad), old_logprobs [B, T] or None (= logprobs detached: one optimizer step per
    rollout batch), advantages [B] or [B, T], mask [B, T]. ``ref_logprobs`` is needed only when kl_coef > 0,
    ``entropy`` [B, T] (from ``entropy_from_logits``) only when entropy_coef > 0, ``rollout_logprobs`` and
    ``tis_cap`` together turn on the TIS weight w (otherwise w = 1). ``normaliser``: see the module docstring.
    Returns the loss and metrics (local token means; "tokens" is their weight).
    """
    mask = mask.bool()
    old = logprobs.detach() if old_logprobs is None else old_logprobs
    per_token, ratio, clipped = clipped_surrogate(logprobs, old, advantages, mask, eps_low, eps_high)
    metrics = _metrics(ratio, (logprobs - old).detach().masked_fill(~mask, 0.0), clipped, mask)
    if (rollout_logprobs is None) != (tis_cap is None):
        raise ValueError("Truncated importance sampling needs both rollout_logprobs and tis_cap (or neither).")
    if rollout_logprobs is not None:
        weights = tis_weights(old, rollout_logprobs, tis_cap)
        per_token = per_token * weights
        metrics["tis_weight_mean"] = _token_mean(weights, mask)
        metrics["tis_capped_frac"] = _token_mean((weights >= tis_cap).float(), mask)
    metrics["pg_loss"] = _token_mean(per_token, mask)
    if kl_coef:
        if ref_logprobs is None:
            raise ValueError("kl_coef is not 0, so the loss needs ref_logprobs from the reference policy.")
        kl = kl_penalty(logprobs, ref_logprobs, kl_estimator)
        per_token = per_token + kl_coef * kl
        metrics["kl"] = _token_mean(kl, mask)
    if entropy_coef:
        if entropy is None:
            raise ValueError("entropy_coef is not 0, so the loss needs per-token entropy (entropy_from_logits).")
        per_token = per_token - entropy_coef * entropy
    if entropy is not None:
        metrics["entropy"] = _token_mean(entropy, mask)
    return aggregate(per_token, mask, agg, normaliser, token_sum_norm), metrics


def grpo_loss(settings: LossSettings, logprobs: Tensor, old_logprobs: Tensor | None, advantages: Tensor,
              mask: Tensor, normaliser: float | None = None, *, ref_logprobs: Tensor | None = None,
              rollout_logprobs: Tensor | None = None, entropy: Tensor | None = None,
              ) -> tuple[Tensor, dict[str, float]]:
    """``policy_loss`` with a stage's settings. Shapes and ``normaliser`` as there; ``rollout_logprobs`` weigh
    the surrogate (truncated IS) only when ``settings.tis_cap`` is set, i.e. the engine is the behaviour policy."""
    use_tis = settings.tis_cap is not None
    if use_tis and rollout_logprobs is None:
        raise ValueError("logprobs_source is 'rollout', so the loss needs the rollout engine's logprobs.")
    return policy_loss(
        logprobs, old_logprobs, advantages, mask, settings.eps_low, settings.eps_high, settings.agg, normaliser,
        token_sum_norm=settings.token_sum_norm, ref_logprobs=ref_logprobs, kl_coef=settings.kl_coef,
        kl_estimator=settings.kl_estimator, entropy=entropy, entropy_coef=settings.entropy_coef,
        rollout_logprobs=rollout_logprobs if use_tis else None, tis_cap=settings.tis_cap)

"""GRPO: group-relative advantages and the algorithm's settings (``GRPOSpec``). Pure PyTorch.

Shape legend: N samples in a rollout batch (prompts x n), B sequences of one micro-batch, T response tokens.

For each prompt the rollout draws a group of n completions with rewards r_1..r_n. The advantage of completion
i, shared by all its tokens, compares it with its own group (Shao et al., DeepSeekMath, 2024):

    grpo      A_i = (r_i - mean(r)) / (std(r) + eps)
    dr_grpo   A_i =  r_i - mean(r)                 (Liu et al., "Understanding R1-Zero-like training", 2025:
                                                    dividing by std over-weights prompts that are almost always
                                                    solved or failed, a difficulty bias)

std is the *sample* standard deviation (Bessel, divisor n - 1), as torch.std and the reference implementations
(verl, TRL, OpenRLHF) compute it, so learning rates and clip ranges carry over from published runs; the
population std would make every advantage larger by sqrt(n / (n - 1)). A group with one sample or with all
rewards equal has no contrast and gets A = 0 exactly, whatever the estimator (no float residue from the mean).

Estimators form an open set: ``@register_advantage("name")`` adds one, and ``GRPOSpec.advantage`` also accepts
a dotted path ``package.module:function``. An estimator maps (rewards [N] float64, group index [N] int64 in
0..G-1, eps) to advantages [N].

The loss terms and their aggregation, including how a trainer normalises across ranks and micro-batches, are
the trainer's (``actors.losses``); ``GRPOSpec.loss_settings`` hands it the settings they need.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from actors.types import KLEstimator, LossAgg, LossSettings
from orchestrator.section import Section

AdvantageFn = Callable[[Tensor, Tensor, float], Tensor]

# A registry because users choose advantage estimators from an open set, their own included.
_ESTIMATORS: dict[str, AdvantageFn] = {}


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: make an advantage estimator ``fn(rewards, group_index, eps) -> advantages`` usable by name."""

    def add(fn: AdvantageFn) -> AdvantageFn:
        if _ESTIMATORS.get(name, fn) is not fn:
            raise ValueError(f"An advantage estimator named '{name}' is already registered; pick another name.")
        _ESTIMATORS[name] = fn
        return fn

    return add


def get_advantage_estimator(name: str) -> AdvantageFn:
    """A registered estimator, or ``package.module:function`` imported on demand."""
    if name in _ESTIMATORS:
        return _ESTIMATORS[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"Cannot load the advantage estimator '{name}': {exc}.") from exc
        if not callable(fn):
            raise ValueError(f"The advantage estimator '{name}' is not a function.")
        return fn
    known = ", ".join(sorted(_ESTIMATORS))
    raise ValueError(f"Unknown advantage estimator '{name}'; known: {known} (or give package.module:function).")


# ---------------------------------------------------------------------------------------------- groups
def group_index(groups: Tensor | int, num_samples: int) -> tuple[Tensor, int]:
    """(index [N] int64 in 0..G-1, G) from group ids [N] (any integers; equal id = same prompt) or from a group
    size n (then samples come in contiguous blocks of n, as a rollout of n samples per prompt returns them)."""
    if isinstance(groups, int):
        if groups < 1 or num_samples % groups:
            raise ValueError(f"{num_samples} samples do not split into groups of {groups}; "
                             "pass per-sample group ids instead.")
        return torch.arange(num_samples) // groups, num_samples // groups
    if groups.shape != (num_samples,):
        raise ValueError(f"Group ids have shape {tuple(groups.shape)}, expected one id per sample ({num_samples}).")
    unique, index = torch.unique(groups, return_inverse=True)
    return index, len(unique)


def _group_reduce(values: Tensor, index: Tensor, num_groups: int, reduce: str) -> Tensor:
    """Per-group sum / amax / amin of values [N], gathered back to [N]."""
    out = values.new_zeros(num_groups).scatter_reduce(0, index, values, reduce, include_self=False)
    return out[index]


def group_mean_std(rewards: Tensor, index: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Each sample's group mean and sample std (divisor n - 1; 0 for a group of one), both [N]."""
    count = _group_reduce(torch.ones_like(rewards), index, num_groups, "sum")
    mean = _group_reduce(rewards, index, num_groups, "sum") / count
    sq = _group_reduce((rewards - mean) ** 2, index, num_groups, "sum")
    return mean, (sq / (count - 1).clamp(min=1)).sqrt()


def constant_groups(rewards: Tensor, index: Tensor, num_groups: int) -> Tensor:
    """[N] bool: the sample's group has no contrast (one sample, or all rewards equal)."""
    return _group_reduce(rewards, index, num_groups, "amax") == _group_reduce(rewards, index, num_groups, "amin")


# ---------------------------------------------------------------------------------------------- estimators
@register_advantage("grpo")
def grpo_advantages(rewards: Tensor, index: Tensor, eps: float) -> Tensor:
    mean, std = group_mean_std(rewards, index, int(index.max()) + 1)
    return (rewards - mean) / (std + eps)


@register_advantage("dr_grpo")
def dr_grpo_advantages(rewards: Tensor, index: Tensor, eps: float) -> Tensor:
    mean, _ = group_mean_std(rewards, index, int(index.max()) + 1)
    return rewards - mean


def compute_advantages(rewards: Tensor, groups: Tensor | int, mode: str = "grpo", eps: float = 1e-6) -> Tensor:
    """Advantages [N] (rewards' dtype) from rewards [N] and group ids [N] or a group size (see ``group_index``)."""
    if rewards.dim() != 1:
        raise ValueError(f"Rewards must be one number per sample (shape [N]), got shape {tuple(rewards.shape)}.")
    if rewards.numel() == 0:
        return rewards.clone()
    estimator = get_advantage_estimator(mode)
    index, num_groups = group_index(groups, rewards.numel())
    index = index.to(rewards.device)
    r = rewards.double()  # group sums of many float32 rewards lose digits that (r - mean) then magnifies
    advantages = estimator(r, index, eps)
    advantages = advantages.masked_fill(constant_groups(r, index, num_groups), 0.0)
    return advantages.to(rewards.dtype)


# ---------------------------------------------------------------------------------------------- config
class GRPOSpec(Section):
    """The algorithm's settings for an ``rl`` stage. Defaults follow DAPO where it departs from GRPO."""

    n: int = Field(8, ge=2, description="samples per prompt (group size); a group of one has no baseline")
    advantage: str = Field("grpo", description="grpo | dr_grpo | a registered name | package.module:function")
    eps_low: float = Field(0.2, ge=0, lt=1, description="ratio clip below: 1 - eps_low")
    eps_high: float = Field(0.28, gt=0, description="ratio clip above: 1 + eps_high (DAPO clip-higher)")
    loss_agg: LossAgg = Field("token_mean", description="how per-token losses become one (see losses.py)")
    token_sum_norm: float | None = Field(
        None, gt=0, description="seq_mean_token_sum only: divide each token sum by this constant (Dr.GRPO uses "
                                "the generation budget, max_tokens)")
    kl_coef: float = Field(0.0, ge=0, description="weight of KL to the reference policy; 0 loads no reference")
    kl_estimator: KLEstimator = Field("k3", description="k1 (log ratio) or k3 (exp(d) - d - 1, non-negative)")
    ref_refresh_every: int | None = Field(
        None, ge=1, description="with kl_coef > 0: copy the current policy into the reference every this many "
                                "optimizer steps, so the KL anchors to a recent policy (default: never; the "
                                "reference stays the stage's starting model)")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus weight (entropy is logged either way)")
    mini_batches: int = Field(1, ge=1, description="optimizer steps per rollout batch; 1 is strictly on-policy")
    logprobs_source: Literal["trainer", "rollout"] = Field(
        "trainer", description="trainer: old logprobs recomputed by the trainer, the engine's ignored; rollout: "
                               "the engine's logprobs are the behaviour policy, corrected by truncated IS")
    tis_cap: float = Field(2.0, ge=1, description="cap C of the truncated importance weight (rollout source)")
    dynamic_sampling: bool = Field(False, description="drop groups whose rewards are all equal, refill the batch")
    max_refill_rounds: int = Field(3, ge=0, description="extra generation rounds allowed to refill one batch")
    mask_truncated: bool = Field(False, description="train no token of completions cut off by max_tokens")

    @field_validator("advantage")
    @classmethod
    def _known_advantage(cls, name: str) -> str:
        get_advantage_estimator(name)  # raises a sentence naming the known estimators
        return name

    @model_validator(mode="after")
    def _consistent(self) -> GRPOSpec:
        if self.token_sum_norm is not None and self.loss_agg != "seq_mean_token_sum":
            raise ValueError(f"token_sum_norm applies only to loss_agg seq_mean_token_sum, not {self.loss_agg}; "
                             "remove it or change loss_agg.")
        if self.ref_refresh_every is not None and self.kl_coef == 0:
            raise ValueError("ref_refresh_every refreshes the KL's reference policy, but kl_coef is 0 (no reference "
                             "is loaded); set kl_coef > 0 or remove ref_refresh_every.")
        return self

    def loss_settings(self, temperature: float) -> LossSettings:
        """What the trainer's loss needs of these settings; ``temperature`` is the stage's sampling temperature."""
        return LossSettings(
            eps_low=self.eps_low, eps_high=self.eps_high, agg=self.loss_agg, token_sum_norm=self.token_sum_norm,
            kl_coef=self.kl_coef, kl_estimator=self.kl_estimator, entropy_coef=self.entropy_coef,
            tis_cap=self.tis_cap if self.logprobs_source == "rollout" else None, temperature=temperature,
            ref_refresh_every=self.ref_refresh_every)

"""Messages between the driver and the Ray roles. Plain slotted dataclasses: Ray pickles them as they are.

Shape legend: B sequences in a batch, L padded sequence length, P prompt tokens, R response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(slots=True)
class SamplingSpec:
    """How a rollout worker samples. ``temperature == 0`` is greedy."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    logprobs: bool = True
    stop_token_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Rollout:
    """One sampled completion of one prompt."""

    prompt_index: int
    """Index of the prompt in the request that produced this sample."""
    prompt_ids: list[int]
    """[P] the prompt as the engine saw it."""
    response_ids: list[int]
    """[R] generated tokens, end-of-turn token included when the model produced one."""
    response_logprobs: list[float] | None
    """[R] the engine's log-probability of each generated token (None if not requested)."""
    text: str
    """The decoded response, special tokens removed."""
    finish_reason: str
    """"stop" (end-of-turn or stop token) or "length" (hit max_tokens: truncated)."""
    policy_version: int
    """Version of the weights that generated this sample (see weight_sync)."""


@dataclass(slots=True)
class SFTBatch:
    """The part of one optimizer step's batch that one data-parallel rank trains on."""

    input_ids: torch.Tensor
    """[B, L] int64, right-padded."""
    loss_mask: torch.Tensor
    """[B, L] bool, True on assistant tokens to train."""
    global_tokens: int
    """Trained tokens across all ranks in this step: the loss is a token mean over the global batch."""


@dataclass(slots=True)
class StepMetrics:
    """What a trainer reports after one optimizer step (rank 0's view; loss is the global token mean)."""

    step: int
    loss: float
    grad_norm: float
    lr: float
    tokens: int
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class RLMicroBatch:
    """One forward/backward of GRPO on one rank. Per-token tensors are target-aligned: column t belongs to
    token ``input_ids[:, t + 1]`` predicted from the prefix up to t, so they have L - 1 columns."""

    input_ids: torch.Tensor
    """[B, L] int64, prompt then response, right-padded."""
    loss_mask: torch.Tensor
    """[B, L-1] bool, True where the target is a trained response token."""
    advantages: torch.Tensor
    """[B] float32, one per sequence (group-relative)."""
    old_logprobs: torch.Tensor | None = None
    """[B, L-1] behaviour-policy logprobs from the trainer before this batch's first update; None when the
    batch is trained in one optimizer step (then old = current, detached)."""
    rollout_logprobs: torch.Tensor | None = None
    """[B, L-1] the rollout engine's logprobs of the sampled tokens (0 off the mask)."""


@dataclass(slots=True)
class RLBatch:
    """One rank's share of one optimizer step (or, for ``PolicyTrainer.logprobs``, of a scoring pass).

    Every rank gets the same number of micro-batches (a rank with fewer sequences gets an empty one), because
    under ZeRO-3 each forward is a collective."""

    micro_batches: list[RLMicroBatch]
    normaliser: float
    """The loss denominator over the whole optimizer step on all ranks (``losses.loss_normaliser``)."""
    sequence_index: list[list[int]] = field(default_factory=list)
    """Per micro-batch, which sequence of the driver's list each row is (-1 for filler rows)."""

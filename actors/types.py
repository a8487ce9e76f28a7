"""Messages between the driver and the Ray roles, and the settings each role is set up with. Plain slotted
dataclasses: Ray pickles them as they are.

Settings are frozen and have no defaults: the pipeline schema (orchestrator/config.py) is the one source of
defaults and builds them (``TrainerSpec.settings``, ``GRPOSpec.loss_settings``, ``RolloutEngineSpec.settings``),
so an actor never re-validates a section or reads a setting by string key.

Shape legend: B sequences in a batch, L padded sequence length, P prompt tokens, R response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

LossAgg = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"]
"""How per-token losses become one number (actors/losses.py)."""
KLEstimator = Literal["k1", "k3"]


# ---------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True, slots=True)
class LossSettings:
    """The GRPO loss of one micro-batch (``actors.losses.grpo_loss``); built by ``GRPOSpec.loss_settings``."""

    eps_low: float
    """Ratio clip below: 1 - eps_low."""
    eps_high: float
    """Ratio clip above: 1 + eps_high."""
    agg: LossAgg
    token_sum_norm: float | None
    """seq_mean_token_sum's constant divisor (None: 1)."""
    kl_coef: float
    """Weight of the KL to the reference policy; 0 means the trainer loads no reference."""
    kl_estimator: KLEstimator
    entropy_coef: float
    tis_cap: float | None
    """Set when the rollout engine's logprobs are the behaviour policy: the cap of the truncated importance
    weight. None: the trainer's own old logprobs are the behaviour policy and no weight is applied."""
    temperature: float
    """The rollout's sampling temperature: the trainer's logprobs are of softmax(logits / temperature)."""
    ref_refresh_every: int | None
    """With kl_coef > 0: every this many optimizer steps the reference becomes a copy of the current policy (the KL
    then anchors to a recent policy rather than the start). None: the reference stays the stage's starting model."""


@dataclass(frozen=True, slots=True)
class OptimSettings:
    """AdamW and its learning-rate schedule (``actors.trainer.lr_lambda``)."""

    lr: float
    weight_decay: float
    betas: tuple[float, float]
    warmup_steps: int
    schedule: Literal["constant", "cosine", "linear"]
    min_lr_ratio: float
    decay_steps: int | None
    """The decay reaches min_lr_ratio here and holds (None: at the last step)."""
    grad_clip: float | None


@dataclass(frozen=True, slots=True)
class TrainerSettings:
    """Everything ``PolicyTrainer.setup`` needs; built by ``TrainerSpec.settings`` for one stage."""

    model_path: str
    """A Hugging Face checkpoint directory."""
    fp8: bool
    """DeepSeek-V3's block-wise FP8 GEMMs in the eligible linears (our V3 only)."""
    dtype: Literal["auto", "float32", "bfloat16"]
    """Compute dtype (DeepSpeed's bf16 mode keeps fp32 master weights); auto: bfloat16 on GPU ranks, float32 on CPU."""
    zero_stage: Literal[0, 1, 2, 3]
    seed: int
    micro_batch_size: int
    grad_accum: int
    """Micro-batches per optimizer step (SFT). RL steps mark their own accumulation boundary: 1."""
    total_steps: int
    """Optimizer steps in the stage, for the learning-rate schedule."""
    router_bias_update_speed: float
    """DeepSeek-V3 MoE: the auxiliary-loss-free balancing speed; 0 freezes the router bias."""
    gradient_checkpointing: bool
    """Recompute each decoder layer's activations in backward instead of keeping them (long sequences)."""
    optim: OptimSettings
    loss: LossSettings | None
    """RL stages: the GRPO loss. None: the trainer takes only SFT steps."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """A RolloutWorker's vLLM engine (the pipeline's ``rollout:`` section, ``RolloutEngineSpec.settings``)."""

    dtype: Literal["float32", "bfloat16", "float16", "auto"]
    max_model_len: int
    enforce_eager: bool
    gpu_memory_utilization: float
    kv_cache_gib: int
    """KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE); GPUs size theirs by gpu_memory_utilization."""
    tensor_parallel_size: int
    seed: int
    nccl_weight_transfer: bool
    """Build the engine with vLLM's NCCL weight-transfer receiver (actors/weight_sync_nccl.py)."""


# ---------------------------------------------------------------------------------------------- messages
@dataclass(slots=True)
class SamplingParams:
    """How a rollout worker samples one request. ``temperature == 0`` is greedy."""

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

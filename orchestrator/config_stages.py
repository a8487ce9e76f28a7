"""The stage sections of the pipeline YAML schema: one model per stage ``kind`` (sft, rl, rejection_sampling,
eval), the sections they share (evaluation, optimizer, trainer, early stopping, fault tolerance) and the
references by which a stage names a model, a dataset or an earlier stage's output.

``orchestrator.config`` assembles these into ``PipelineSpec`` and re-exports them; import them from there.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from actors.types import LossSettings, OptimSettings, TrainerSettings
from orchestrator.algorithms.grpo import GRPOSpec
from orchestrator.section import Section
from rewards.config import RewardSpec, parse_specs

Role = Literal["trainer", "rollout", "reward"]


# ---------------------------------------------------------------------------------------------- references
class Ref(Section):
    """A named entry (``tiny``) or the output of an earlier stage (``{from: cold_start}``)."""

    name: str | None = None
    from_: str | None = Field(None, alias="from")

    @model_validator(mode="after")
    def _one_of(self) -> Ref:
        if (self.name is None) == (self.from_ is None):
            raise ValueError("give either a name or {from: <stage>}")
        return self

    def __str__(self) -> str:
        return self.name if self.name is not None else f"{{from: {self.from_}}}"


def _coerce_ref(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


RefField = Annotated[Ref, BeforeValidator(_coerce_ref)]
RefList = Annotated[list[RefField], BeforeValidator(lambda v: v if isinstance(v, list) else [v])]
"""One dataset reference or a list of them."""


# ---------------------------------------------------------------------------------------------- stages
class EvalSpec(Section):
    """Held-out evaluation: greedy pass@1 by default; ``n > 1`` with temperature adds cons@n. Several datasets
    (e.g. math and general prompts) are scored together, with a per-domain breakdown."""

    data: RefList = Field(min_length=1)
    limit: int | None = Field(None, ge=1, description="use the first N rows of each dataset")
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    n: int = Field(1, ge=1)
    graders: dict[str, str] = Field(
        {}, description="domain -> reward that grades it (a score of 1 is correct); defaults: math -> math, "
                        "code -> code, general -> instruction")


class OptimSpec(Section):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    decay_steps: int | None = Field(None, ge=1, description="the cosine/linear decay reaches min_lr_ratio at this "
                                    "step and holds it (default: the stage's last step); with early stopping, a "
                                    "stage can then train on at the final rate until its held-out score plateaus")
    grad_clip: float | None = Field(1.0, gt=0)

    def settings(self) -> OptimSettings:
        return OptimSettings(lr=self.lr, weight_decay=self.weight_decay, betas=self.betas,
                             warmup_steps=self.warmup_steps, schedule=self.schedule, min_lr_ratio=self.min_lr_ratio,
                             decay_steps=self.decay_steps, grad_clip=self.grad_clip)


class EarlyStopping(Section):
    """Evaluate every ``every_steps`` on ``data``; stop after ``patience`` evaluations without a gain of
    more than ``min_delta``; the best checkpoint becomes the stage's output. With datasets of several domains
    the score is the mean of the domains' pass@1, so a small domain weighs as much as a large one."""

    every_steps: int = Field(ge=1)
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)
    min_steps: int = Field(0, ge=0, description="never stop before this step: a model still learning the format "
                                                "scores ~0 for several evaluations, which is not a plateau")
    data: RefList = Field(min_length=1)
    limit: int | None = Field(None, ge=1, description="use the first N rows of each dataset")


class TrainerSpec(Section):
    """How the PolicyTrainer ranks optimise: micro-batching, ZeRO stage, precision, optimizer."""

    micro_batch_size: int = Field(8, ge=1)
    max_seq_len: int = Field(512, ge=8)
    zero_stage: Literal[0, 1, 2, 3] = 2
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="compute dtype (master weights stay fp32); auto: bfloat16 on GPU ranks "
                            "(cluster.trainer.gpus > 0), float32 on CPU")
    gradient_checkpointing: bool = Field(
        False, description="recompute each decoder layer's activations during backward instead of storing them: "
                           "about one more forward per step, for activation memory that no longer grows with depth "
                           "(long sequences)")
    optim: OptimSpec = OptimSpec()
    seed: int = 0
    router_bias_update_speed: float = Field(
        1e-3, ge=0, description="DeepSeek-V3 MoE: auxiliary-loss-free balancing speed (gamma); 0 freezes the bias")

    def settings(self, model_path: str, *, total_steps: int, grad_accum: int, fp8: bool,
                 loss: LossSettings | None = None) -> TrainerSettings:
        """What ``PolicyTrainer.setup`` gets for one stage: this section plus what the stage works out (the
        model's checkpoint and ``fp8`` flag, its optimizer steps, micro-batches per step, RL's loss)."""
        return TrainerSettings(
            model_path=model_path, fp8=fp8, dtype=self.dtype, zero_stage=self.zero_stage, seed=self.seed,
            micro_batch_size=self.micro_batch_size, grad_accum=grad_accum, total_steps=total_steps,
            router_bias_update_speed=self.router_bias_update_speed,
            gradient_checkpointing=self.gradient_checkpointing, optim=self.optim.settings(), loss=loss)


class SFTTrainSpec(TrainerSpec):
    """SFT: one optimizer step consumes ``batch_size`` sequences, split over data-parallel ranks and micro-batches."""

    epochs: float | None = Field(None, gt=0)
    steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    group_by_length: bool = Field(
        False, description="batch sequences of similar length together (within shuffled windows of 64 batches) "
                           "so a batch pads to less; for data whose domains differ in length")

    @model_validator(mode="after")
    def _length(self) -> SFTTrainSpec:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of 'epochs' or 'steps'")
        return self


class FaultTolerance(Section):
    """How many dead actors a stage replaces while it runs (README "When things fail")."""

    max_restarts: int = Field(3, ge=0, description="replacements of a dead RolloutWorker or RewardWorker and rebuilds "
                                                   "of the trainer group, over all roles, in one run of the stage; "
                                                   "past it the stage fails, naming the role, rank, node and cause")


class Resumable(Section):
    """Checkpoints a re-run of the same command resumes from (orchestrator/checkpoints.py), and the fault budget.
    These settings change how a stage runs, not what it computes: they are left out of its fingerprint."""

    checkpoint_every: int | None = Field(None, ge=1, description="write a resumable checkpoint every k steps")
    checkpoint_every_s: float | None = Field(
        1800.0, gt=0, description="also checkpoint when this many seconds have passed since the last one (null: "
                                  "only every checkpoint_every steps)")
    keep_last: int = Field(2, ge=1, description="checkpoints kept on disk; older ones are deleted")
    fault_tolerance: FaultTolerance = FaultTolerance()


RUN_ONLY_FIELDS = frozenset(Resumable.model_fields)
"""Stage settings outside the stage's fingerprint: changing them neither re-runs a finished stage nor voids a
checkpoint."""


class SFTStage(Resumable):
    kind: Literal["sft"]
    name: str
    model: RefField
    data: list[RefField] = Field(min_length=1)
    train: SFTTrainSpec
    early_stopping: EarlyStopping | None = None
    eval: EvalSpec | None = None

    @property
    def roles(self) -> tuple[Role, ...]:
        """The roles whose actors the stage holds while it runs: ``plan`` prints them and the stage can spawn no
        other (``StageContext.spawn``). Rollout workers serve the candidates of early stopping and the eval."""
        return ("trainer", "rollout") if self.eval is not None or self.early_stopping is not None else ("trainer",)


class EvalStage(Section):
    kind: Literal["eval"]
    name: str
    model: RefField
    eval: EvalSpec
    fault_tolerance: FaultTolerance = FaultTolerance()

    roles: ClassVar[tuple[Role, ...]] = ("rollout",)


class RolloutSamplingSpec(Section):
    """How rollouts are sampled during RL (evaluation has its own settings)."""

    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1, description="generation budget per completion")


class PeriodicEval(Section):
    """A cheaper held-out evaluation every ``every_steps`` steps, for the learning curve in metrics.jsonl (with
    several domains, also each domain's pass@1)."""

    every_steps: int = Field(ge=1)
    data: RefList = Field(min_length=1)
    limit: int | None = Field(200, ge=1, description="use the first N rows of each dataset")


class AsyncRL(Section):
    """Rollouts generated while the trainer trains (orchestrator/stages/rl.py, "Asynchronous steps"): the batch of
    step t + 1 is generated and scored while step t trains, by the engines serving weights up to
    ``max_staleness`` versions behind the trainer's. Every sample keeps the version that generated it; the loss
    reweights it by truncated importance sampling against the engine's logprobs (``grpo.logprobs_source:
    rollout``, implied)."""

    max_staleness: int = Field(1, ge=1, le=8, description="how many policy versions a trained sample may lag the "
                                                          "trainer (1: one step off, as in verl)")


class RLStage(Resumable):
    """GRPO on a prompt set: every step samples ``grpo.n`` completions for each of ``prompts_per_step`` prompts,
    scores them with ``rewards``, trains on group-relative advantages and syncs the new weights to the rollout
    workers. See orchestrator/stages/rl.py."""

    kind: Literal["rl"]
    name: str
    model: RefField
    data: list[RefField] = Field(min_length=1, description="prompt rows (prompt or messages, answer, domain, ...)")
    rewards: list[RewardSpec] = Field(min_length=1)
    pass_reward: str | list[str] | None = Field(
        None, description="the reward component(s) whose score 1 means solved (pass rate); with several (one "
                          "per domain), a sample passes when those that apply to it score 1; default: the first")
    steps: int = Field(ge=1)
    prompts_per_step: int = Field(16, ge=1)
    grpo: GRPOSpec = GRPOSpec()
    sampling: RolloutSamplingSpec = RolloutSamplingSpec()
    train: TrainerSpec = TrainerSpec()
    reward_deadline_s: float = Field(30.0, gt=0, description="hard wall-clock limit per sample")
    sync_every: int = Field(1, ge=1, description="push weights to the rollout workers every k optimizer steps")
    sync_bucket_mb: float = Field(64.0, gt=0)
    weight_sync: Literal["auto", "object_store", "nccl", "checkpoint"] = Field(
        "auto", description="how new weights reach the rollout engines: auto picks nccl when trainers and rollout "
                            "workers have GPUs, else object_store where vLLM updates the model exactly, else "
                            "checkpoint (see actors/weight_sync.py, actors/weight_sync_nccl.py)")
    dev_eval: PeriodicEval | None = None
    eval: EvalSpec | None = None
    async_: AsyncRL | None = Field(
        None, alias="async", description="overlap generation with training: {max_staleness: k}; off (null) keeps "
                                         "every step on-policy")

    roles: ClassVar[tuple[Role, ...]] = ("rollout", "trainer", "reward")

    @model_validator(mode="after")
    def _consistent(self) -> RLStage:
        components = [spec.component for spec in parse_specs(self.rewards)]  # raises on duplicate names
        unknown = [c for c in self.pass_components if c not in components]
        if unknown:
            raise ValueError(f"pass_reward {', '.join(map(repr, unknown))} is not one of the rewards: "
                             f"{', '.join(components)}")
        if self.grpo.mini_batches > self.prompts_per_step:
            raise ValueError(f"grpo.mini_batches ({self.grpo.mini_batches}) cannot exceed prompts_per_step "
                             f"({self.prompts_per_step}): mini-batches hold whole prompt groups")
        if self.async_ is not None:
            if self.sync_every != 1:
                raise ValueError(f"async bounds staleness itself (max_staleness); sync_every must stay 1, not "
                                 f"{self.sync_every}")
            if self.grpo.logprobs_source == "trainer" and "logprobs_source" in self.grpo.model_fields_set:
                raise ValueError("async trains on samples of older policy versions, which the loss corrects with the "
                                 "engine's logprobs: grpo.logprobs_source must be rollout (or left out)")
            self.grpo = self.grpo.model_copy(update={"logprobs_source": "rollout"})
        return self

    @property
    def pass_components(self) -> list[str]:
        if self.pass_reward is None:
            return [self.rewards[0].component]
        return [self.pass_reward] if isinstance(self.pass_reward, str) else list(self.pass_reward)

    def passed(self, components: dict[str, float]) -> bool:
        """Solved: every pass component that applies to the sample (is in its scores) is 1, and one applies."""
        scores = [components[c] for c in self.pass_components if c in components]
        return bool(scores) and all(s >= 1.0 for s in scores)


class RSFilters(Section):
    """Which sampled completions a rejection-sampling stage keeps. Rules run in this order and the first one
    that rejects a sample names the reason in the stage's ``filter_report``."""

    correct: list[str] = Field(
        ["math", "code", "instruction"],
        description="reward components that must score 1 wherever they apply (correct by the rule rewards)")
    min_scores: dict[str, float] = Field(
        {}, description="component -> minimum score, e.g. {format: 1.0, language: 0.95}; the reason is the name")
    no_mixed_language: bool = Field(True, description="drop chains of thought that mix scripts")
    drop_truncated: bool = Field(True, description="drop completions cut by the generation budget")
    max_response_tokens: int | None = Field(None, ge=1)
    no_code_blocks: bool = Field(True, description="drop fenced code blocks outside the code domain")
    dedup: bool = Field(True, description="drop near-duplicates of a kept completion of the same prompt "
                                          "(same text after lower-casing and collapsing whitespace)")
    max_per_prompt: int = Field(2, ge=1, description="keep at most this many completions per prompt")


class MixSpec(Section):
    """Non-reasoning rows mixed into a curated set (R1 mixed ~200k of them into ~600k reasoning samples)."""

    data: RefField
    ratio: float = Field(gt=0, description="rows of this set per kept reasoning row (0.33 ~ R1's 200k:600k)")


class RejectionSamplingStage(Section):
    """Sample ``n`` completions per prompt from a checkpoint, keep the good ones (``filters``), mix in other
    data, and write an SFT dataset (the stage's ``data`` artifact) with provenance per row."""

    kind: Literal["rejection_sampling"]
    name: str
    model: RefField
    data: list[RefField] = Field(min_length=1, description="prompt rows (prompt or messages, answer, domain, ...)")
    prompts: int | None = Field(None, ge=1, description="use at most this many prompts (first ones)")
    rewards: list[RewardSpec] = Field(min_length=1)
    n: int = Field(4, ge=1, description="completions sampled per prompt")
    sampling: RolloutSamplingSpec = RolloutSamplingSpec()
    filters: RSFilters = RSFilters()
    mix: list[MixSpec] = []
    chunk_prompts: int = Field(512, ge=1, description="prompts per generation round (progress and memory)")
    reward_deadline_s: float = Field(30.0, gt=0, description="hard wall-clock limit per sample")
    fault_tolerance: FaultTolerance = FaultTolerance()

    roles: ClassVar[tuple[Role, ...]] = ("rollout", "reward")

    @model_validator(mode="after")
    def _consistent(self) -> RejectionSamplingStage:
        components = [spec.component for spec in parse_specs(self.rewards)]
        unknown = [c for c in self.filters.min_scores if c not in components]
        if unknown:
            raise ValueError(f"filters.min_scores names {', '.join(map(repr, unknown))}, which is not one of the "
                             f"rewards: {', '.join(components)}")
        if not set(self.filters.correct) & set(components):
            raise ValueError(f"filters.correct ({', '.join(self.filters.correct)}) names none of the rewards "
                             f"({', '.join(components)}): nothing would decide correctness")
        return self


StageSpec = Annotated[Union[SFTStage, EvalStage, RLStage, RejectionSamplingStage], Field(discriminator="kind")]
STAGE_KINDS = ("sft", "rl", "rejection_sampling", "eval")
PRODUCES_CHECKPOINT = {"sft", "rl"}
PRODUCES_DATA = {"rejection_sampling"}

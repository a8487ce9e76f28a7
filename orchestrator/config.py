"""The pipeline YAML schema (pydantic v2), validated once at the edge.

Every section is its own model with ``extra="forbid"``, so a misspelt key is an error rather than a silently
ignored setting. Stages are a union discriminated by ``kind``. References between sections (a stage's model
``{from: cold_start}``, a dataset name) are checked by ``orchestrator.references``; ``load_pipeline`` turns
every problem into a message with its YAML path and line (see ``orchestrator.yaml_errors``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from actors.types import EngineSettings
from orchestrator.arch_defaults import check_dense_config
from orchestrator.config_stages import (
    PRODUCES_CHECKPOINT,
    PRODUCES_DATA,
    RUN_ONLY_FIELDS,
    STAGE_KINDS,
    AsyncRL,
    EarlyStopping,
    EvalSpec,
    EvalStage,
    FaultTolerance,
    MixSpec,
    OptimSpec,
    PeriodicEval,
    Ref,
    RefField,
    RejectionSamplingStage,
    Resumable,
    RLStage,
    Role,
    RolloutSamplingSpec,
    RSFilters,
    SFTStage,
    SFTTrainSpec,
    StageSpec,
    TrainerSpec,
)
from orchestrator.data.code import KINDS as CODE_KINDS
from orchestrator.data.general import KINDS as GENERAL_KINDS
from orchestrator.section import Section
from orchestrator.trackers import TrackersSpec

__all__ = [  # the schema in one place: the stage sections live in orchestrator.config_stages
    "PRODUCES_CHECKPOINT",
    "PRODUCES_DATA",
    "ROLE_CLASSES",
    "RUN_ONLY_FIELDS",
    "STAGE_KINDS",
    "AsyncRL",
    "ClusterSpec",
    "DatasetSpec",
    "EarlyStopping",
    "EvalSpec",
    "EvalStage",
    "FaultTolerance",
    "InitSpec",
    "MixSpec",
    "ModelSpec",
    "OptimSpec",
    "PeriodicEval",
    "PipelineSpec",
    "RLStage",
    "RSFilters",
    "Ref",
    "RefField",
    "RejectionSamplingStage",
    "Resumable",
    "Role",
    "RoleResources",
    "RolloutEngineSpec",
    "RolloutSamplingSpec",
    "RunArtifact",
    "SFTStage",
    "SFTTrainSpec",
    "StageSpec",
    "SyntheticSpec",
    "TokenizerSpec",
    "TrainerSpec",
]


# ---------------------------------------------------------------------------------------------- cluster
class RoleResources(Section):
    """How many actors of one role, and what each reserves from Ray."""

    workers: int = Field(1, ge=1)
    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)
    threads: int | None = Field(None, ge=1, description="torch threads per actor on CPU (default: cpus)")


ROLE_CLASSES: dict[Role, str] = {"trainer": "PolicyTrainer", "rollout": "RolloutWorker", "reward": "RewardWorker"}
"""The actor class each role runs (actors/trainer.py, actors/rollout.py, actors/reward.py)."""


class ClusterSpec(Section):
    rollout: RoleResources = RoleResources()
    trainer: RoleResources = RoleResources()
    reward: RoleResources = RoleResources(cpus=0.5)
    placement: Literal["pack", "spread"] = "pack"
    ready_timeout_s: float = Field(300.0, gt=0, description="how long to wait for a placement group")

    def resources(self, role: Role) -> RoleResources:
        return getattr(self, role)


# ---------------------------------------------------------------------------------------------- models
class TokenizerSpec(Section):
    """A byte-level BPE trained locally on the named datasets' text (no hub)."""

    vocab_size: int = Field(512, ge=300)
    train_on: list[str] = Field(min_length=1)


class InitSpec(Section):
    arch: Literal["qwen2", "llama", "deepseek_v3"]
    config: dict[str, Any] = {}
    seed: int = 0
    tokenizer: TokenizerSpec

    @model_validator(mode="after")
    def _servable(self) -> InitSpec:
        check_dense_config(self.arch, self.config)
        return self


class ModelSpec(Section):
    """A Hugging Face checkpoint directory (``path``), a model on the Hugging Face Hub (``hub``: downloaded once
    into the Hugging Face cache, which on a cluster should be shared storage), or a fresh model (``init``)."""

    path: str | None = None
    hub: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$", description="Hub model id, e.g. Qwen/Qwen2.5-7B")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for ``hub``")
    init: InitSpec | None = None
    fp8: bool = Field(False, description="train with DeepSeek-V3's block-wise FP8 recipe (E4M3 GEMMs in attention and "
                      "MLP/expert projections, fp32 master weights; our DeepSeek-V3 only; README 'FP8')")

    @model_validator(mode="after")
    def _one_of(self) -> ModelSpec:
        if sum(x is not None for x in (self.path, self.hub, self.init)) != 1:
            raise ValueError("a model needs exactly one of 'path' (a Hugging Face checkpoint directory), 'hub' "
                             "(a Hub model id) or 'init'")
        return self


# ---------------------------------------------------------------------------------------------- datasets
class SyntheticSpec(Section):
    """A generated dataset: ``arithmetic`` word problems (orchestrator/data/synthetic.py; settings ``digits``,
    ``ops``, ``mul_methods``, ``worked``), ``general`` instructions with checkable constraints
    (orchestrator/data/general.py; ``kinds``) or ``code``: short Python functions and programs from a spec,
    with tests for the ``code`` reward (orchestrator/data/code.py; ``kinds``, ``conventions``, ``cases``,
    ``worked``)."""

    task: Literal["arithmetic", "general", "code"] = "arithmetic"
    split: Literal["sft", "rl", "dev", "eval"]
    size: int = Field(ge=1)
    seed: int = 0
    digits: int = Field(2, ge=1, le=6)
    ops: list[Literal["add", "sub", "mul", "frac", "share"]] = ["add", "sub", "mul", "frac", "share"]
    mul_methods: list[Literal["long", "tens"]] = Field(
        ["long"], min_length=1, description="how sft chains multiply: long multiplication, or by place value "
                                            "(tens); with both, each problem shows one, chosen by its hash")
    worked: float = Field(1.0, ge=0, le=1, description="share of sft responses that work the problem out step by "
                                                        "step; the rest give only the answer (empty think block)")
    kinds: list[Literal["repeat", "reverse", "sort", "upper", "lower", "count", "exact_words", "start_end",
                        "comma_list", "arith", "string", "list"]] | None = Field(
        None, min_length=1, description="general or code: which kinds of task (default all of the task's kinds)")
    conventions: list[Literal["stdio", "call", "assert", "check"]] = Field(
        ["stdio", "call", "assert", "check"], min_length=1,
        description="code: test conventions, one per row (stdin/stdout, call-based, MBPP asserts, HumanEval check)")
    cases: int = Field(3, ge=1, le=16, description="code: test cases per problem")

    @model_validator(mode="after")
    def _task_fields(self) -> SyntheticSpec:
        own = {"arithmetic": {"digits", "ops", "mul_methods", "worked"}, "general": {"kinds"},
               "code": {"kinds", "conventions", "cases", "worked"}}
        others = set().union(*(fields for task, fields in own.items() if task != self.task))
        stray = sorted((others - own[self.task]) & self.model_fields_set)
        if stray:
            raise ValueError(f"{', '.join(stray)} do not apply to task {self.task!r} "
                             f"(it takes {', '.join(sorted(own[self.task]))})")
        task_kinds = {"general": GENERAL_KINDS, "code": CODE_KINDS}.get(self.task, ())
        wrong = sorted(set(self.kinds or ()) - set(task_kinds))
        if wrong:
            raise ValueError(f"kinds {', '.join(wrong)} are not kinds of task {self.task!r} "
                             f"(it has {', '.join(task_kinds)})")
        return self


class RunArtifact(Section):
    """A dataset another pipeline's run produced: ``{run_dir: runs/tiny_r1, stage: rs}`` (e.g. a teacher's
    curated samples for distillation)."""

    run_dir: str
    stage: str
    artifact: str = "data"


class DatasetSpec(Section):
    """User data (JSONL or parquet; rows in the chat-messages or prompt/response shape), a synthetic set, or a
    finished stage's dataset from another run directory (``from_run``)."""

    path: str | None = None
    synthetic: SyntheticSpec | None = None
    from_run: RunArtifact | None = None
    limit: int | None = Field(None, ge=1)
    system: str | None = Field(None, description="system prompt prepended to every conversation")

    @model_validator(mode="after")
    def _one_of(self) -> DatasetSpec:
        if sum(x is not None for x in (self.path, self.synthetic, self.from_run)) != 1:
            raise ValueError("a dataset needs exactly one of 'path', 'synthetic' or 'from_run'")
        return self



# ---------------------------------------------------------------------------------------------- pipeline
class RolloutEngineSpec(Section):
    """vLLM engine settings shared by every rollout worker."""

    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    max_model_len: int = Field(1024, ge=16)
    enforce_eager: bool = True
    gpu_memory_utilization: float = Field(0.8, gt=0, le=1)
    kv_cache_gib: int = Field(1, ge=1, description="KV cache size on CPU in GiB (VLLM_CPU_KVCACHE_SPACE)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine shards the model over (one worker)")
    seed: int = 0

    def settings(self, nccl_weight_transfer: bool = False) -> EngineSettings:
        return EngineSettings(dtype=self.dtype, max_model_len=self.max_model_len, enforce_eager=self.enforce_eager,
                              gpu_memory_utilization=self.gpu_memory_utilization, kv_cache_gib=self.kv_cache_gib,
                              tensor_parallel_size=self.tensor_parallel_size, seed=self.seed,
                              nccl_weight_transfer=nccl_weight_transfer)


class PipelineSpec(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    cluster: ClusterSpec = ClusterSpec()
    rollout: RolloutEngineSpec = RolloutEngineSpec()
    models: dict[str, ModelSpec] = Field(min_length=1)
    datasets: dict[str, DatasetSpec] = {}
    stages: list[StageSpec] = Field(min_length=1)
    trackers: TrackersSpec = TrackersSpec()

    @model_validator(mode="after")
    def _engine_fits_worker(self) -> PipelineSpec:
        tp, gpus = self.rollout.tensor_parallel_size, self.cluster.rollout.gpus
        if tp > 1 and gpus != tp:
            raise ValueError(f"rollout.tensor_parallel_size={tp} needs cluster.rollout.gpus={tp} per worker "
                             f"(one engine per worker), not {gpus:g}")
        return self

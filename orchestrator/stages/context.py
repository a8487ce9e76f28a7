"""What a stage is given: its own directory and metrics log, the cluster and engine settings, the actors of the
roles it declares, and resolvers that turn references (``tiny``, ``{from: cold_start}``) into checkpoint paths
and dataset rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TypeVar

from actors.types import EngineSettings, TrainerSettings
from orchestrator import cluster
from orchestrator.actor_pool import ActorPool
from orchestrator.checkpoints import Checkpoint, StageCheckpoints
from orchestrator.cluster import ActorGroup, ActorLost, ActorNames, run_namespace
from orchestrator.config import (ClusterSpec, EarlyStopping, EvalSpec, PeriodicEval, PipelineSpec, Ref, Resumable, Role,
                                 StageSpec)
from orchestrator.data import loading
from orchestrator.faults import RestartBudget
from orchestrator.fresh_model import materialize
from orchestrator.run_dir import MetricsLog, RunDir, write_json
from orchestrator.telemetry import StageTelemetry
from orchestrator.trackers import Trackers
from rewards.config import RewardSpec

T = TypeVar("T")


@dataclass
class StageResult:
    metrics: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    """Artifact name → path relative to the run directory (``checkpoint``, ``data``)."""


class StageContext:
    def __init__(self, spec: PipelineSpec, run: RunDir, stage: StageSpec, fingerprint: str = "",
                 actor_logs: bool = True, trackers: Trackers | None = None, pool: ActorPool | None = None):
        self._spec = spec
        self.pool = pool
        """Where the stage takes its actors over from and hands them back to (None: its own, stopped at the end)."""
        self._keys: dict[Role, object] = {}
        self.taken_over: list[Role] = []
        """Roles whose actors an earlier stage started and this one took over (``actors_taken_over`` in status)."""
        self.run = run
        self.name = stage.name
        self.kind = stage.kind
        self.roles: tuple[Role, ...] = stage.roles
        self.dir = run.stage_dir(stage.name)
        self.cluster: ClusterSpec = spec.cluster
        self.engine: EngineSettings = spec.rollout.settings()
        self.seed = spec.seed
        self.fingerprint = fingerprint
        self.checkpoints: StageCheckpoints | None = None
        self.resume_from: Checkpoint | None = None
        """The checkpoint of an earlier attempt of this very stage that this run continues from."""
        # The stage's Prometheus metrics see what metrics.jsonl, the restart budget and the checkpoints see.
        self.telemetry = StageTelemetry(spec.name, stage.name, stage.kind)
        self.telemetry.started()
        if isinstance(stage, Resumable):
            self.checkpoints = StageCheckpoints(self.dir / "checkpoints", fingerprint, stage.checkpoint_every,
                                                stage.checkpoint_every_s, stage.keep_last,
                                                on_commit=self.telemetry.checkpoint)
            self.resume_from = self.checkpoints.latest()
            self.checkpoints.discard_others(self.resume_from)
        self.restarts = RestartBudget(stage.name, stage.fault_tolerance.max_restarts,
                                      on_restart=self.telemetry.restart)
        self.groups: dict[Role, ActorGroup] = {}
        """The stage's actor groups by role, as last spawned."""
        # actor_logs: each actor's output goes to <stage>/logs/<role>-<rank>.log instead of the console.
        self.names = ActorNames(run_namespace(spec.name, run.root), f"{spec.name}/{stage.name}",
                                log_dir=self.dir / "logs" if actor_logs else None)
        # Without a checkpoint the stage starts over and an earlier attempt's records go; with one they are kept
        # up to its step. The trackers (wandb, MLflow) get the same records, from the step after it.
        resume_step = self.resume_from.step if self.resume_from else None
        track = (trackers or Trackers([])).stage(stage.name, resume_step)

        def on_log(record: dict) -> None:
            self.telemetry.step(record)
            track(record)

        self.metrics = MetricsLog(self.dir / "metrics.jsonl", run.root / "events" / stage.name,
                                  resume_step=resume_step, on_log=on_log)

    # ------------------------------------------------------------------ actors
    # Each spawn_* takes over the pool's group of that role when it was built the same way (the key: the role's
    # resources and constructor arguments), and starts a new one otherwise (orchestrator/actor_pool.py).
    def spawn_trainers(self) -> ActorGroup:
        """The stage's PolicyTrainer ranks, joined into one torch.distributed group."""
        res = self._resources("trainer")
        return self._spawn("trainer", (res,), lambda: cluster.spawn_trainers(res, self.cluster, self.names))

    def spawn_rollout(self, nccl_weight_transfer: bool = False) -> ActorGroup:
        """The stage's RolloutWorkers; ``nccl_weight_transfer`` builds their engines with vLLM's NCCL receiver."""
        res, engine = self._resources("rollout"), replace(self.engine, nccl_weight_transfer=nccl_weight_transfer)
        return self._spawn("rollout", (res, engine),
                           lambda: cluster.spawn_rollout(res, self.cluster, engine, self.names))

    def spawn_rewards(self, specs: list[RewardSpec], deadline_s: float) -> ActorGroup:
        res = self._resources("reward")
        key = (res, [s.model_dump() for s in specs], deadline_s)
        return self._spawn("reward", key,
                           lambda: cluster.spawn_rewards(res, self.cluster, specs, deadline_s, self.names))

    def _spawn(self, role: Role, key: object, start: Callable[[], ActorGroup]) -> ActorGroup:
        group = self.pool.take(role, key, self._join) if self.pool is not None else None
        if group is None:
            group = start()
        else:
            self.taken_over.append(role)
        self._keys[role] = key
        return self._checked(group)

    def _join(self, group: ActorGroup, ranks: list[int] | None = None) -> None:
        """Actors of an earlier stage (``ranks``, default all) now work for this one: its log files, its labels."""
        ranks = list(range(len(group.actors))) if ranks is None else ranks
        logs = [None if self.names.log_dir is None else str(self.names.log_dir / f"{group.role}-{r}.log")
                for r in ranks]
        group.gather([group.actors[r].join_stage.remote(self.name, log) for r, log in zip(ranks, logs)], ranks)

    def hand_back(self) -> None:
        """The stage is over: its groups go to the pool for the next stage (or stop, without a pool)."""
        for role, group in reversed(list(self.groups.items())):
            if self.pool is None:
                group.shutdown()
            else:
                self.pool.keep(role, self._keys[role], group)
        self.groups = {}

    def _checked(self, group: ActorGroup, ranks: list[int] | None = None) -> ActorGroup:
        """Register ``group`` as its role's; its actors (``ranks``, default all) must see the run directory."""
        self.groups[group.role] = group
        cluster.check_run_dir(group, self.run.root, self.run.root / RunDir.MARKER, self.run.mark(), ranks)
        return group

    def rebuild_trainers(self, settings: TrainerSettings) -> Checkpoint | None:
        """After a trainer rank was lost: a new trainer group set up with ``settings``, and the stage's metrics
        rewound to its last checkpoint, which is returned for the stage to restore (None: start over)."""
        self.groups["trainer"].shutdown()
        self.names = replace(self.names, generation=self.names.generation + 1)
        self.spawn_trainers().call("setup", settings)
        checkpoint = self.checkpoints.latest()
        self.metrics.rewind(checkpoint.step if checkpoint else 0)
        return checkpoint

    def replace(self, role: Role, rank: int) -> None:
        """A new actor in place of ``role`` rank ``rank``, in its bundle (on another node if its node is gone)."""
        self.groups[role].replace(rank)
        self._join(self.groups[role], [rank])   # a group taken over restarts actors under its first stage's names
        self._checked(self.groups[role], [rank])

    def replacer(self, load_rollout: Callable[[int], None] | None = None) -> Callable[[ActorLost], None]:
        """What ``RestartBudget.retrying`` calls when a rollout or reward worker is lost: start a new one in its
        bundle; ``load_rollout(rank)`` then brings a new engine up to what the others serve."""
        def replace_lost(lost: ActorLost) -> None:
            self.replace(lost.role, lost.rank)
            if lost.role == "rollout" and load_rollout is not None:
                load_rollout(lost.rank)
        return replace_lost

    def retrying(self, work: Callable[[], T], load_rollout: Callable[[int], None] | None = None,
                 step: int | None = None) -> T:
        """``work`` redone after replacing any rollout or reward worker it loses (within the restart budget)."""
        return self.restarts.retrying(work, self.replacer(load_rollout), step)

    def _resources(self, role: Role):
        # A stage spawns only what its spec declares, so `plan` (which prints the declaration) cannot drift.
        assert role in self.roles, f"stage {self.name!r} ({self.kind}) spawns a {role} but declares {self.roles}"
        return self.cluster.resources(role)

    # ------------------------------------------------------------------ references
    def dataset_path(self, ref: Ref) -> Path:
        if ref.from_ is not None:
            return self.run.artifact(ref.from_, "data")
        return loading.materialize(ref.name, self._spec.datasets[ref.name], self.run.root / "datasets")

    def rows(self, ref: Ref) -> list[dict]:
        return loading.read_rows(self.dataset_path(ref))

    def eval_rows(self, spec: EvalSpec | EarlyStopping | PeriodicEval) -> list[dict]:
        """An evaluation block's rows: the first ``limit`` of each of its datasets."""
        return [row for ref in spec.data for row in self.rows(ref)[: spec.limit]]

    def model_path(self, ref: Ref) -> Path:
        if ref.from_ is not None:
            return self.run.artifact(ref.from_, "checkpoint")
        spec = self._spec.models[ref.name]
        if spec.path is not None:
            return Path(spec.path)
        if spec.hub is not None:  # not exercised here (no Hub access in CI): the documented Hub download call
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(spec.hub, revision=spec.revision))
        texts = (f"{r.get('prompt', '')}\n{r.get('response', '')}"
                 for ds in spec.init.tokenizer.train_on for r in self.rows(Ref(name=ds)))
        return materialize(ref.name, spec.init, texts, self.run.root / "models" / ref.name)

    def fp8(self, ref: Ref) -> bool:
        """The ``fp8`` flag of the model a reference descends from (``{from: stage}`` follows the stages' models
        back to a named model: a stage trains in the precision its lineage was declared with)."""
        stages = {s.name: s for s in self._spec.stages}
        seen: set[str] = set()
        while ref.from_ is not None and ref.from_ not in seen:
            seen.add(ref.from_)
            ref = stages[ref.from_].model
        return bool(ref.name is not None and self._spec.models[ref.name].fp8)

    @staticmethod
    @cache
    def tokenizer(path: Path):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path))

    # ------------------------------------------------------------------ outputs
    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.run.root))

    def write_eval(self, result: dict) -> None:
        write_json(self.dir / "eval.json", result)

    def close(self) -> None:
        self.metrics.close()
        self.telemetry.finished()

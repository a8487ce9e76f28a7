"""Connect to Ray (or start an embedded one) and spawn typed groups of actors in placement groups.

Each role's actors share one placement group (one bundle per actor), so a group is scheduled all at once or
not at all: a stage never starts with half its trainers. Groups live for one stage and are torn down after
it, returning their resources for the next stage's roles.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.actor_log import ACTOR_LOG_ENV
from actors.types import EngineSettings
from orchestrator.config import ROLE_CLASSES, ClusterSpec, Role, RoleResources
from orchestrator.loopback import resolve_address
from rewards.config import RewardSpec

log = logging.getLogger(__name__)


def _project_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextmanager
def connect(address: str | None, cluster: ClusterSpec, verbose: bool = False, dashboard: bool = True):
    """Join a Ray cluster, or start an embedded one; shut down only what this call started.

    ``address``: a cluster to join; ``"local"`` forces an embedded Ray. Without one: the cluster of the Ray
    job we run in (RAY_ADDRESS), else a cluster started with `ray start` on this machine, else an embedded
    Ray on 127.0.0.1 sized to this machine, with its dashboard on 127.0.0.1 unless ``dashboard`` is False.
    ``verbose`` forwards every actor's output to this console; otherwise it goes to the stage's log files.
    """
    if ray.is_initialized():
        yield
        return
    address = resolve_address(address)
    if address == "local":
        # Actors import the project's packages: make them importable wherever Ray starts its workers.
        env = {"PYTHONPATH": _project_root() + os.pathsep + os.environ.get("PYTHONPATH", "")}
        ctx = ray.init(address="local", num_cpus=max(os.cpu_count() or 1, _needed_cpus(cluster)),
                       _node_ip_address="127.0.0.1", include_dashboard=dashboard, dashboard_host="127.0.0.1",
                       runtime_env={"env_vars": env}, log_to_driver=verbose, configure_logging=False)
        log.info("started an embedded Ray on 127.0.0.1 (%g CPUs)", ray.cluster_resources().get("CPU", 0))
        if dashboard and ctx.dashboard_url:
            print(f"Ray dashboard: http://{ctx.dashboard_url}" + _token_hint(), flush=True)
    else:
        # A Ray job's driver inherits the job's runtime env (the uploaded working dir). From a shell we ship
        # the project ourselves, so actors on other nodes can import it.
        # Ray's job supervisor gives the entrypoint RAY_JOB_CONFIG_JSON_ENV_VAR (the job's runtime env and metadata),
        # not RAY_JOB_ID: without this, `run --address auto` in a job shipped a second working_dir, which ray.init
        # refuses as a conflict with the job's.
        in_job = ("RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ or bool(os.environ.get("RAY_JOB_ID"))
                  or address == os.environ.get("RAY_ADDRESS"))
        runtime_env = None if in_job else {"working_dir": _project_root(), "excludes": UPLOAD_EXCLUDES}
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=verbose, configure_logging=False)
        log.info("joined the Ray cluster at %s (%g CPUs, %g GPUs)", address,
                 ray.cluster_resources().get("CPU", 0), ray.cluster_resources().get("GPU", 0))
    try:
        yield
    finally:
        ray.shutdown()


def _token_hint() -> str:
    # Ray's token authentication (on by default in the Ray this project pins) asks the browser for the token.
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return ""
    return " (token authentication: paste the output of `ray get-auth-token`)"


UPLOAD_EXCLUDES = [".venv/", "runs/", ".git/", "**/__pycache__/", ".pytest_cache/"]
"""What a shipped working dir leaves out: a driver joining a cluster from a shell, and `submit`."""


def _needed_cpus(cluster: ClusterSpec) -> int:
    # Stages run one after another but a stage may hold all three roles at once.
    return int(sum(r.workers * r.cpus for r in (cluster.trainer, cluster.rollout, cluster.reward)) + 0.999)


@dataclass(frozen=True)
class ActorNames:
    """How a stage's actors are listed on the dashboard's Actors page and by `ray list actors`:
    ``<pipeline>/<stage>/<role>-<rank>``, in one namespace per run directory. A replacement gets a suffix
    (``rollout-0.1``): Ray may still hold the dead actor's name for a moment."""

    namespace: str
    prefix: str
    generation: int = 0
    """Replacements so far of a whole group (a rebuilt trainer group starts here)."""
    log_dir: Path | None = None
    """Where each actor's stdout and stderr go, one file per name (``rollout-0.1.log``); None leaves them to
    Ray, which forwards them to the driver's console (``--verbose``)."""

    def of(self, role: Role, rank: int, attempt: int) -> str:
        n = self.generation + attempt
        return f"{self.prefix}/{role}-{rank}" + (f".{n}" if n else "")

    def options(self, role: Role, rank: int, attempt: int) -> dict[str, Any]:
        """Ray actor options: the name, the namespace, and the actor's log file (an env var the actor reads
        first thing, actors/actor_log.py; Ray merges env_vars with the job's runtime env)."""
        name = self.of(role, rank, attempt)
        opts: dict[str, Any] = {"name": name, "namespace": self.namespace}
        if self.log_dir is not None:
            log_file = self.log_dir / f"{name.rsplit('/', 1)[-1]}.log"
            opts["runtime_env"] = {"env_vars": {ACTOR_LOG_ENV: str(log_file)}}
        return opts


def run_namespace(pipeline: str, run_dir: Path) -> str:
    """The Ray namespace of one run: the pipeline's name and a digest of its run directory, so two runs of the
    same pipeline on one cluster list their actors apart."""
    return f"r1ray.{pipeline}.{hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:8]}"


class ActorLost(RuntimeError):
    """An actor of a group died (killed, OOM, its node gone) while the driver waited on it."""

    def __init__(self, role: Role, rank: int, node: str, cause: BaseException):
        self.role, self.rank, self.node, self.cause = role, rank, node, cause
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        super().__init__(f"{ROLE_CLASSES[role]} rank {rank} on node {node} died: {first[:300]}")


@dataclass
class ActorGroup:
    """The actors of one role in one stage, one per bundle of the placement group they live in.

    Calls wait for every actor, and fail as soon as one actor is lost (``ActorLost``, naming role, rank and node),
    not when the slowest healthy one returns: a rank left waiting in a collective would never return at all."""

    role: Role
    actors: list[Any]
    pg: Any = field(repr=False)
    start: Callable[[int], Any] = field(repr=False, default=None)
    """Starts the actor of bundle ``rank`` afresh (``replace``)."""

    def call(self, method: str, *args, **kwargs) -> list:
        """Call ``method`` on every actor with the same arguments and wait for all results."""
        return self.gather([getattr(a, method).remote(*args, **kwargs) for a in self.actors])

    def call_each(self, method: str, per_actor_args: list[tuple]) -> list:
        """Call ``method`` on actor i with ``per_actor_args[i]`` and wait for all results."""
        return self.gather([getattr(a, method).remote(*args) for a, args in zip(self.actors, per_actor_args)])

    def call_one(self, rank: int, method: str, *args, **kwargs):
        return self.gather([getattr(self.actors[rank], method).remote(*args, **kwargs)], ranks=[rank])[0]

    def gather(self, refs: list, ranks: list[int] | None = None) -> list:
        """Results of ``refs``, the calls made on actors ``ranks`` (default: one per actor, in order)."""
        ranks = ranks if ranks is not None else list(range(len(refs)))
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayActorError as e:   # died or unreachable; a method's own error is raised below
                self._raise_lost(e, ranks[refs.index(done[0])])
            except Exception:  # noqa: BLE001 -- the method raised: ray.get below re-raises it, in call order
                break
        return ray.get(refs)

    def as_completed(self, refs: list, ranks: list[int]):
        """(index into ``refs``, result) of each call as it finishes, first finished first; ``ranks[i]`` is the
        actor ``refs[i]`` was made on. A lost actor raises ``ActorLost``, a method's error is raised as it comes."""
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = refs.index(done[0])
            try:
                yield i, ray.get(done[0])
            except ray.exceptions.RayActorError as e:
                self._raise_lost(e, ranks[i])

    def _raise_lost(self, error: Exception, rank: int):
        if getattr(error, "actor_init_failed", False):
            raise error   # its constructor failed: a replacement would fail the same way
        raise ActorLost(self.role, rank, self.node(rank), error) from error

    def node(self, rank: int) -> str:
        """The IP of the node that holds bundle ``rank`` (what a user needs to find the machine)."""
        try:
            node_id = placement_group_table(self.pg)["bundles_to_node_id"][rank]
            return next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), node_id)
        except (KeyError, IndexError, TypeError):
            return "unknown"

    def replace(self, rank: int) -> Any:
        """Kill what is left of actor ``rank`` and start a new one in its bundle (Ray re-places a bundle whose
        node died). The new actor has its constructor arguments and nothing else: loading is the caller's."""
        ray.kill(self.actors[rank], no_restart=True)
        self.actors[rank] = self.start(rank)
        return self.actors[rank]

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
        remove_placement_group(self.pg)


def spawn_group(role: Role, cls: type, res: RoleResources, cluster: ClusterSpec, make_args,
                names: ActorNames | None = None) -> ActorGroup:
    """Reserve ``res.workers`` bundles, then start one ``cls`` actor per bundle with ``make_args(rank)``, named
    by ``names`` (anonymous without)."""
    bundles = [{"CPU": res.cpus, **({"GPU": res.gpus} if res.gpus else {})} for _ in range(res.workers)]
    pg = placement_group(bundles, strategy="PACK" if cluster.placement == "pack" else "SPREAD")
    ready, _ = ray.wait([pg.ready()], timeout=cluster.ready_timeout_s)
    if not ready:
        remove_placement_group(pg)
        have = ray.available_resources()
        raise RuntimeError(
            f"The cluster cannot place {res.workers} {ROLE_CLASSES[role]} actor(s) with {res.cpus} CPU and "
            f"{res.gpus} GPU each within {cluster.ready_timeout_s:.0f} s (available now: "
            f"{have.get('CPU', 0):g} CPU, {have.get('GPU', 0):g} GPU). Lower cluster.{role} or add nodes.")
    remote_cls = ray.remote(cls)
    attempts = [0] * res.workers

    def start(rank: int):
        args, kwargs = make_args(rank)
        named = names.options(role, rank, attempts[rank]) if names else {}
        attempts[rank] += 1
        return remote_cls.options(
            num_cpus=res.cpus, num_gpus=res.gpus, **named,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=pg,
                                                                 placement_group_bundle_index=rank),
        ).remote(*args, **kwargs)

    return ActorGroup(role, [start(rank) for rank in range(res.workers)], pg, start)


def check_run_dir(group: ActorGroup, run_dir: Path, marker: Path, token: str, ranks: list[int] | None = None
                  ) -> None:
    """Fail at once, naming the node, if an actor of ``group`` does not see the driver's run directory (its
    marker with this run's ``token``): checkpoints, datasets and sync files would otherwise go missing mid-stage."""
    ranks = list(range(len(group.actors))) if ranks is None else ranks
    seen = group.gather([group.actors[r].sees_run_dir.remote(str(marker), token) for r in ranks], ranks)
    for rank, (node, problem) in zip(ranks, seen):
        if problem is not None:
            raise RuntimeError(
                f"{ROLE_CLASSES[group.role]} rank {rank} on node {node} does not see the run directory {run_dir}: "
                f"{problem}. Every node reads and writes the run directory (checkpoints, datasets, weight-sync "
                "files): put it on a filesystem all nodes mount (NFS, Lustre, a mounted bucket) and pass that path "
                "as --run-dir.")


def spawn_trainers(res: RoleResources, cluster: ClusterSpec, names: ActorNames | None = None) -> ActorGroup:
    """PolicyTrainer ranks, joined into one torch.distributed group."""
    from actors.trainer import PolicyTrainer

    device = "cuda" if res.gpus else "cpu"
    group = spawn_group("trainer", PolicyTrainer, res, cluster,
                        lambda rank: ((rank, res.workers), {"threads": res.threads, "device": device}), names)
    addr, port = ray.get(group.actors[0].address.remote())
    group.call("init_distributed", addr, port)
    return group


def spawn_rollout(res: RoleResources, cluster: ClusterSpec, engine: EngineSettings,
                  names: ActorNames | None = None) -> ActorGroup:
    from actors.rollout import RolloutWorker

    device = "cuda" if res.gpus else "cpu"
    threads = res.threads or max(1, int(res.cpus))
    return spawn_group("rollout", RolloutWorker, res, cluster,
                       lambda rank: ((engine,), {"threads": threads, "device": device}), names)


def spawn_rewards(res: RoleResources, cluster: ClusterSpec, specs: list[RewardSpec], deadline_s: float,
                  names: ActorNames | None = None) -> ActorGroup:
    """RewardWorkers, each scoring with a pool of one process per whole CPU it reserves (at least one)."""
    from actors.reward import RewardWorker

    procs = max(1, int(res.cpus))
    return spawn_group("reward", RewardWorker, res, cluster,
                       lambda rank: ((specs,), {"num_procs": procs, "deadline_s": deadline_s}), names)

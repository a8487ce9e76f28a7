"""Actor groups on a local Ray: named per run, a lost actor reported with its role, rank and node, and replaced in
its bundle under a new name."""

from __future__ import annotations

import os
import signal

import pytest

from actors.run_dir_probe import RunDirProbe
from orchestrator.cluster import ActorLost, ActorNames, check_run_dir, run_namespace, spawn_group
from orchestrator.config import ClusterSpec, RoleResources
from orchestrator.run_dir import RunDir


class Echo(RunDirProbe):
    def __init__(self, rank: int):
        self.rank = rank

    def pid(self) -> int:
        return os.getpid()

    def who(self) -> int:
        return self.rank

    def fail(self) -> None:
        raise ValueError("a bug in the method, not a dead actor")


def test_named_group_reports_a_lost_actor_and_replaces_it(ray_local, tmp_path):
    ray = ray_local
    names = ActorNames(run_namespace("tiny_r1", tmp_path), "tiny_r1/cold_start")
    assert names.namespace == run_namespace("tiny_r1", tmp_path / ".." / tmp_path.name)   # one per run dir
    assert names.namespace != run_namespace("tiny_r1", tmp_path / "other")
    res = RoleResources(workers=2, cpus=0.5)
    group = spawn_group("rollout", Echo, res, ClusterSpec(), lambda rank: ((rank,), {}), names)
    try:
        assert group.call("who") == [0, 1]
        found = ray.get_actor("tiny_r1/cold_start/rollout-1", namespace=names.namespace)
        assert ray.get(found.who.remote()) == 1
        os.kill(group.call_one(1, "pid"), signal.SIGKILL)
        with pytest.raises(ActorLost) as info:
            group.call("who")
        assert (info.value.role, info.value.rank, info.value.node) == ("rollout", 1, "127.0.0.1")
        assert str(info.value).startswith("RolloutWorker rank 1 on node 127.0.0.1 died:")
        group.replace(1)
        assert group.call("who") == [0, 1]
        replacement = ray.get_actor("tiny_r1/cold_start/rollout-1.1", namespace=names.namespace)
        assert ray.get(replacement.who.remote()) == 1
    finally:
        group.shutdown()


def test_a_method_error_is_not_a_lost_actor(ray_local):
    group = spawn_group("reward", Echo, RoleResources(workers=1, cpus=0.5), ClusterSpec(), lambda rank: ((rank,), {}))
    try:
        with pytest.raises(ValueError, match="a bug in the method") as info:
            group.call("fail")
        assert not isinstance(info.value, ActorLost)
    finally:
        group.shutdown()



def test_an_actor_that_does_not_see_the_run_dir_stops_the_stage_at_once(ray_local, tmp_path):
    run = RunDir(tmp_path / "run", "p")
    token = run.mark()
    group = spawn_group("trainer", Echo, RoleResources(workers=2, cpus=0.5), ClusterSpec(), lambda r: ((r,), {}))
    try:
        check_run_dir(group, run.root, run.root / RunDir.MARKER, token)   # the same filesystem: fine
        with pytest.raises(RuntimeError) as info:   # what a node with its own local disk at that path finds
            check_run_dir(group, run.root, tmp_path / "elsewhere" / RunDir.MARKER, token)
        message = str(info.value)
        assert message.startswith(f"PolicyTrainer rank 0 on node 127.0.0.1 does not see the run directory {run.root}")
        assert "(the directory does not exist)" in message and "pass that path as --run-dir" in message
        other = RunDir(tmp_path / "other", "p")
        other.mark()
        with pytest.raises(RuntimeError, match="belongs to another run"):
            check_run_dir(group, run.root, other.root / RunDir.MARKER, token)
    finally:
        group.shutdown()

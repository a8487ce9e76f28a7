"""The pool that hands a stage's actor groups to the next stage: taken over only when built the same way and
still alive, stopped otherwise, all stopped at the end."""

from __future__ import annotations

from orchestrator.actor_pool import ActorPool
from orchestrator.cluster import ActorLost


class Group:
    def __init__(self, name: str):
        self.name, self.stopped, self.joined = name, False, 0

    def shutdown(self) -> None:
        self.stopped = True


def join(group: Group) -> None:
    group.joined += 1


def test_a_group_built_the_same_way_is_taken_over_once():
    pool, group = ActorPool(), Group("a")
    pool.keep("trainer", ("1 CPU",), group)
    assert pool.take("trainer", ("1 CPU",), join) is group and group.joined == 1 and not group.stopped
    assert pool.take("trainer", ("1 CPU",), join) is None   # taken: the pool no longer holds it
    assert pool.reused == {"trainer": 1}


def test_a_different_key_or_a_dead_group_stops_the_held_one():
    pool, group = ActorPool(), Group("a")
    pool.keep("rollout", ("engine", 256), group)
    assert pool.take("rollout", ("engine", 512), join) is None and group.stopped and group.joined == 0
    dead = Group("b")
    pool.keep("rollout", ("engine", 256), dead)

    def lost(g: Group) -> None:
        raise ActorLost("rollout", 0, "127.0.0.1", RuntimeError("killed while idle"))

    assert pool.take("rollout", ("engine", 256), lost) is None and dead.stopped
    assert pool.reused == {}


def test_keeping_a_newer_group_stops_the_older_and_shutdown_stops_all():
    pool, old, new, other = ActorPool(), Group("old"), Group("new"), Group("other")
    pool.keep("reward", 1, old)
    pool.keep("reward", 2, new)
    pool.keep("trainer", 1, other)
    assert old.stopped and not new.stopped
    pool.keep("reward", 2, new)   # the same group handed back again is not stopped
    assert not new.stopped
    pool.shutdown()
    assert new.stopped and other.stopped
    assert pool.take("reward", 2, join) is None


"""The NCCL weight sync's CPU-side parts (actors/weight_sync_nccl.py) and the stage's choice of sync.

No GPU here, so no NCCL: the plan is checked against vLLM's own update/init dataclasses and its CPU packing
functions, and the driver's ordering against stand-in actors that meet in a barrier the way NCCL members do.
vLLM's packed broadcast itself (CUDA streams, PyNccl) is not exercised."""

from __future__ import annotations

import math
import threading
import time
from concurrent import futures
from types import SimpleNamespace

import pytest
import torch

from actors.weight_sync_nccl import WeightPlan, group_layout, init_nccl_sync, sync_weights_nccl, worker_init_info
from orchestrator.config import ClusterSpec, RLStage, RoleResources
from orchestrator.stages.rl import choose_weight_sync


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "model.embed_tokens.weight": torch.randn(100, generator=g),                         # 400 B
        "model.layers.0.mlp.down_proj.weight": torch.randn(10, 10, generator=g).bfloat16(),  # 200 B
        "model.layers.0.self_attn.kv_b_proj.weight": torch.randn(10, 10, generator=g),       # 400 B
        "model.layers.0.mlp.up_proj.weight": torch.randn(20, 15, generator=g).to(torch.float8_e4m3fn),  # 300 B
        "model.norm.weight": torch.tensor(1.5),                                              # 4 B, 0-d
    }


# ---------------------------------------------------------------------------------------------- the plan
def test_plan_lists_names_dtypes_and_shapes_in_state_dict_order_as_vllm_reads_them():
    nccl = pytest.importorskip("vllm.distributed.weight_transfer.nccl_engine")
    state = _state()
    plan = WeightPlan.of(state.items())
    assert plan.names == list(state)
    assert plan.dtype_names == ["float32", "bfloat16", "float32", "float8_e4m3fn", "float32"]
    assert plan.shapes == [[100], [10, 10], [10, 10], [20, 15], []]
    assert plan.nbytes == 400 + 200 + 400 + 300 + 4
    # The worker parses the plan into this dataclass and rebuilds each dtype with getattr(torch, name).
    info = nccl.NCCLWeightTransferUpdateInfo(**plan.update_info())
    assert [getattr(torch, d) for d in info.dtype_names] == [t.dtype for t in state.values()]


def test_plan_refuses_a_stream_that_disagrees_with_it():
    state = _state()
    plan = WeightPlan.of(state.items())
    assert [n for n, _ in plan.checked(state.items())] == plan.names
    renamed = {("lm_head.weight" if n == "model.norm.weight" else n): t for n, t in state.items()}
    with pytest.raises(ValueError, match="Tensor 4 .*lm_head.weight"):
        list(plan.checked(renamed.items()))
    recast = {**state, "model.layers.0.mlp.down_proj.weight": torch.zeros(10, 10)}
    with pytest.raises(ValueError, match="Tensor 1 .*float32"):
        list(plan.checked(recast.items()))
    with pytest.raises(ValueError, match="4 tensors, the sync plan 5"):
        list(plan.checked(list(state.items())[:4]))
    with pytest.raises(ValueError, match="first extra is 'extra'"):
        list(plan.checked([*state.items(), ("extra", torch.zeros(1))]))


def _consumer_cuts(plan: WeightPlan, buffer_bytes: int) -> list[list[str]]:
    """Where vLLM's receiving side (packed_nccl_broadcast_consumer) closes each buffer, from the plan alone:
    it adds tensors until the buffer holds more than ``buffer_bytes``."""
    cuts, current, size = [], [], 0
    for name, shape, dtype in zip(plan.names, plan.shapes, plan.dtype_names):
        current.append(name)
        size += math.prod(shape) * getattr(torch, dtype).itemsize
        if size > buffer_bytes:
            cuts, current, size = cuts + [current], [], 0
    return cuts + ([current] if current else [])


def test_vllm_packs_the_checked_stream_into_the_buffers_the_receivers_expect():
    packing = pytest.importorskip("vllm.distributed.weight_transfer.packed_tensor")
    state = _state()
    plan = WeightPlan.of(state.items())
    stream, chunks = plan.checked(state.items()), []
    while (chunk := packing.pack_tensors(stream, lambda item: item[1], buffer_size_bytes=500)) is not None:
        chunks.append(chunk)
    assert [c.names for c in chunks] == _consumer_cuts(plan, 500) == [
        ["model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"],
        ["model.layers.0.self_attn.kv_b_proj.weight", "model.layers.0.mlp.up_proj.weight"],
        ["model.norm.weight"]]
    start = 0
    for chunk in chunks:  # unpacked with the plan's metadata, as the receivers do
        i = slice(start, start + len(chunk.names))
        start = i.stop
        sizes = [math.prod(s) * getattr(torch, d).itemsize for s, d in zip(plan.shapes[i], plan.dtype_names[i])]
        dtypes = [getattr(torch, d) for d in plan.dtype_names[i]]
        for name, got in packing.unpack_tensor(chunk.packed_tensor, plan.names[i], plan.shapes[i], dtypes, sizes):
            want = state[name]
            assert got.dtype == want.dtype and got.shape == want.shape
            assert torch.equal(got.reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8)), name


def test_every_engine_worker_gets_its_own_member_number():
    nccl = pytest.importorskip("vllm.distributed.weight_transfer.nccl_engine")
    offsets, world = group_layout([2, 1, 4])  # engines with tensor parallel 2, 1 and 4
    assert offsets == [1, 3, 4] and world == 8
    members = [off + r for off, size in zip(offsets, [2, 1, 4]) for r in range(size)]
    assert sorted(members) == list(range(1, world))  # member 0 is trainer rank 0
    info = nccl.NCCLWeightTransferInitInfo(**worker_init_info("10.0.0.1", 29555, 3, world, 2**20))
    assert info.rank_offset == 3 and info.world_size == 8 and info.packed and info.packed_buffer_size_bytes == 2**20


# ---------------------------------------------------------------------------------------------- the driver
class _Actor:
    """A Ray actor stand-in: its calls run one at a time in submission order on its own thread, and ``.remote``
    returns a future, so a member blocked in the collective blocks only its own actor."""

    def __init__(self, impl):
        self.impl, self.pool = impl, futures.ThreadPoolExecutor(1)

    def __getattr__(self, name):
        method = getattr(self.impl, name)
        return SimpleNamespace(remote=lambda *args, **kwargs: self.pool.submit(method, *args, **kwargs))


class _Worker:
    def __init__(self, collective: threading.Barrier, size: int = 1):
        self.collective, self.size, self.version, self.init_info, self.received = collective, size, -1, None, None

    def engine_world_size(self) -> int:
        return self.size

    def init_nccl_sync(self, init_info: dict) -> None:
        self.init_info = init_info
        self.collective.wait()

    def update_weights_nccl(self, update_info: dict, version: int) -> dict:
        self.collective.wait()  # inside the broadcast: returns only when the sender is in it too
        self.received, self.version = update_info, version
        return {"version": version, "seconds": 0.0}


class _Trainer:
    def __init__(self, rank: int, collective: threading.Barrier, plan: WeightPlan, fail: Exception | None = None):
        self.rank, self.collective, self.plan, self.fail, self.opened = rank, collective, plan, fail, None

    def address(self):
        return "10.0.0.1", 29555

    def init_nccl_sync(self, address, port, world_size, buffer_bytes):
        if self.rank:
            return None
        self.opened = (address, port, world_size, buffer_bytes)
        self.collective.wait()
        return self.plan

    def send_weights_nccl(self, version: int):
        if self.rank:
            return None
        if self.fail:
            raise self.fail
        self.collective.wait()
        return {"version": version, "seconds": 0.0, "bytes": self.plan.nbytes}


@pytest.fixture
def fake_ray(monkeypatch):
    """ray.get / ray.wait over the stand-in actors' futures."""
    import ray

    def get(refs):
        return [f.result(timeout=10) for f in refs] if isinstance(refs, list) else refs.result(timeout=10)

    def wait(refs, num_returns=1):
        done, _ = futures.wait(refs, timeout=10, return_when=futures.FIRST_COMPLETED)
        assert done, "no call finished within 10 s"
        first = [f for f in refs if f in done][:num_returns]
        return first, [f for f in refs if f not in first]

    monkeypatch.setattr(ray, "get", get)
    monkeypatch.setattr(ray, "wait", wait)


def _groups(collective, plan, workers=2, sizes=None, fail=None):
    trainers = SimpleNamespace(actors=[_Actor(_Trainer(r, collective, plan, fail)) for r in range(2)])
    rollout = SimpleNamespace(actors=[_Actor(_Worker(collective, s)) for s in (sizes or [1] * workers)])
    return trainers, rollout


def test_sync_has_receivers_and_sender_in_the_collective_together_and_tags_the_version(fake_ray):
    plan = WeightPlan.of(_state().items())
    collective = threading.Barrier(3, timeout=3)  # trainer rank 0 and two engines
    trainers, rollout = _groups(collective, plan)
    info = sync_weights_nccl(trainers, rollout, 7, plan)  # a sequential driver breaks the barrier here
    assert [w.impl.version for w in rollout.actors] == [7, 7]
    assert all(w.impl.received == plan.update_info() for w in rollout.actors)
    assert info["version"] == 7 and [w["version"] for w in info["workers"]] == [7, 7]
    assert info["bytes"] == plan.nbytes and info["tensors"] == 5


def test_a_failing_member_is_reported_at_once_not_after_the_others_give_up(fake_ray):
    plan = WeightPlan.of(_state().items())
    collective = threading.Barrier(3, timeout=5)
    trainers, rollout = _groups(collective, plan, fail=ValueError("the model changed since init_nccl_sync"))
    t0 = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="model changed"):
            sync_weights_nccl(trainers, rollout, 7, plan)
        assert time.perf_counter() - t0 < 2  # the receivers are still waiting for the sender
        assert [w.impl.version for w in rollout.actors] == [-1, -1]
    finally:
        collective.abort()


def test_setup_joins_every_member_at_once_with_its_own_offset(fake_ray):
    plan = WeightPlan.of(_state().items())
    collective = threading.Barrier(3, timeout=3)
    trainers, rollout = _groups(collective, plan, sizes=[2, 1])
    assert init_nccl_sync(trainers, rollout, bucket_mb=1.0) == plan
    assert trainers.actors[0].impl.opened == ("10.0.0.1", 29555, 4, 2**20)
    assert [w.impl.init_info["rank_offset"] for w in rollout.actors] == [1, 3]
    assert {w.impl.init_info["world_size"] for w in rollout.actors} == {4}


# ---------------------------------------------------------------------------------------------- the choice
QWEN = {"model_type": "qwen2"}
TIED = {"model_type": "qwen2", "tie_word_embeddings": True}
PADDED_MOE = {"model_type": "deepseek_v3", "n_routed_experts": 4, "moe_intermediate_size": 48}
CPUS = ClusterSpec()
GPUS = ClusterSpec(trainer=RoleResources(gpus=1), rollout=RoleResources(gpus=1))


def _stage(weight_sync: str) -> RLStage:
    return RLStage.model_validate({"kind": "rl", "name": "rl", "model": "m", "data": ["d"],
                                   "rewards": [{"name": "math"}], "steps": 1, "weight_sync": weight_sync})


def _never() -> bool:
    raise AssertionError("on CPUs the driver must not import vLLM to choose")


def test_auto_keeps_the_cpu_choice_and_takes_nccl_only_with_gpus_on_both_sides():
    assert choose_weight_sync(_stage("auto"), CPUS, QWEN, _never) == "object_store"
    assert choose_weight_sync(_stage("auto"), CPUS, TIED, _never) == "object_store"   # the head is re-tied
    assert choose_weight_sync(_stage("auto"), CPUS, PADDED_MOE, _never) == "checkpoint"
    assert choose_weight_sync(_stage("auto"), GPUS, QWEN, lambda: True) == "nccl"
    assert choose_weight_sync(_stage("auto"), GPUS, QWEN, lambda: False) == "object_store"
    trainer_only = ClusterSpec(trainer=RoleResources(gpus=1))
    assert choose_weight_sync(_stage("auto"), trainer_only, QWEN, _never) == "object_store"
    shared = ClusterSpec(trainer=RoleResources(gpus=1), rollout=RoleResources(workers=2, gpus=0.5))
    assert choose_weight_sync(_stage("auto"), shared, QWEN, _never) == "object_store"  # two members on one GPU
    assert choose_weight_sync(_stage("checkpoint"), GPUS, QWEN, _never) == "checkpoint"


def test_explicit_choices_that_cannot_run_are_errors_naming_the_option():
    with pytest.raises(ValueError, match=r"Stage 'rl': weight_sync: nccl .*cluster.rollout.gpus=0"):
        choose_weight_sync(_stage("nccl"), CPUS, QWEN, _never)
    with pytest.raises(ValueError, match="weight_sync: nccl needs vLLM's NCCL weight-transfer engine"):
        choose_weight_sync(_stage("nccl"), GPUS, QWEN, lambda: False)
    with pytest.raises(ValueError, match="weight_sync: object_store cannot update this MoE model: "
                                         "moe_intermediate_size=48"):
        choose_weight_sync(_stage("object_store"), CPUS, PADDED_MOE, _never)
    assert choose_weight_sync(_stage("nccl"), GPUS, TIED, lambda: True) == "nccl"

"""NCCL weight sync (GPUs): trainer rank 0 broadcasts the weights straight into every rollout engine's GPU workers,
through vLLM 0.32's weight-transfer API (vllm/distributed/weight_transfer/).

Not run yet: the development machines and CI have no GPU, so this path is written against vLLM 0.32's API and
only its CPU-side parts are tested (the plan, vLLM's packing of it, the driver's ordering).

Contract (the driver runs it; actors/weight_sync.py is the object-store path this replaces on GPUs):

0. Setup, once per stage, after every engine has loaded its checkpoint (``init_nccl_sync``). The engines were
   built with ``ENGINE_ARGS``, so vLLM attached its NCCL receiver at load. Trainer rank 0 picks the rendezvous, its
   node IP and a free port (``PolicyTrainer.address``); vLLM's TCPStore listens there. Member 0 of the group is
   trainer rank 0, the only sender; engine i's GPU workers follow as members ``1 + (workers of engines before i)``
   onwards (vLLM numbers a worker ``rank_offset`` + its rank in the engine, and separate engines all have
   data-parallel index 0, so each gets its own offset). Every trainer rank gathers the weights once (ZeRO-3 needs
   all of them) and rank 0 fixes the ``WeightPlan``: HF names, dtypes and shapes in state-dict order. NCCL's init
   is a collective, so the driver submits every member's join before it waits for any.
1. Quiesce. As in the object-store path: no ``generate``/``prompt_logprobs`` in flight or issued until step 3 has
   returned on every worker; a ``RolloutWorker`` refuses to generate while a sync is open.
2. Transfer (``sync_weights_nccl``). Each worker, in one ``RolloutWorker.update_weights_nccl`` call, runs vLLM's
   ``start_weight_update`` (layerwise reload: layers parked on the meta device), then ``update_weights`` with the
   plan, which waits in NCCL broadcasts. Every trainer rank gathers (ZeRO-3) and rank 0 streams the tensors, each
   checked against the plan, through vLLM's packed broadcast: buffers of about ``sync_bucket_mb`` MB (vLLM closes
   one once it passes the size), two in flight. Both sides must be inside the collective together, so the driver
   submits receivers and sender, then waits. It raises the first failure at once: a member that fails leaves the
   others blocked in NCCL for good, and the stage ends (its actors are killed).
3. Finalise. Each worker calls ``finish_weight_update(weight_version)``: vLLM's ``finalize_layerwise_reload`` runs
   every layer's post-load processing, attention layers last, so MLA recomputes its absorbed matrices from the new
   ``kv_b_proj``; fused-MoE layers re-shuffle the new experts into the storage their kernels (and CUDA graphs)
   captured (the experts' own first-load hook, which the CPU path re-arms, is a no-op for the GPU Triton experts).
   Then the prefix cache is cleared and the worker adopts ``version``.

Names and tensors are the object-store path's (``PolicyTrainer._hf_state``, what ``save_hf`` writes), so vLLM's
own ``load_weights`` fuses and renames. Tied embeddings: on GPUs vLLM's head shares the embedding's parameter,
whose storage the reload refills in place, so the head follows ``embed_tokens``; the stale CPU-repacked head that the
object-store path repacks on finish (``weight_sync._refresh_tied_lm_head``) should not arise on GPUs (unverified).

Why not vLLM's ``NCCLTrainerWeightTransferEngine``: it drives the workers from the trainer process and gives every
engine ``rank_offset=1`` (one data-parallel deployment); here several independent engines share a group and the
driver coordinates, so we use its parts: ``nccl_common.trainer_init``, ``packed_nccl_broadcast_producer`` and the
engines' ``LLM`` weight-update methods.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from actors.weight_sync import bucket_bytes

ENGINE_ARGS = {"weight_transfer_config": {"backend": "nccl"}}
"""What a RolloutWorker's engine arguments need for this path: vLLM builds its NCCL receiver when it loads."""
NUM_BUFFERS = 2  # vLLM's default: one buffer packs while the other is on the wire; both sides must agree


def nccl_available() -> bool:
    """Whether vLLM's NCCL weight-transfer engine can be imported here (vLLM 0.32 or later)."""
    try:
        return importlib.util.find_spec("vllm.distributed.weight_transfer.nccl_engine") is not None
    except ImportError:  # no vllm, or one without weight_transfer
        return False


def _signature(name: str, tensor: torch.Tensor) -> tuple[str, str, list[int]]:
    """(name, torch dtype name as vLLM reads it back, shape): one entry of the plan."""
    return name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)


# ---------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True, slots=True)
class WeightPlan:
    """What every sync sends, fixed at setup: the fields of vLLM's ``NCCLWeightTransferUpdateInfo``."""

    names: list[str]
    """Hugging Face checkpoint names in the trainer's state-dict order: the order the bytes travel in."""
    dtype_names: list[str]
    """torch dtype names as vLLM reads them back (``getattr(torch, name)``): "bfloat16", "float8_e4m3fn"."""
    shapes: list[list[int]]

    @classmethod
    def of(cls, named: Iterable[tuple[str, torch.Tensor]]) -> WeightPlan:
        plan = cls([], [], [])
        for name, tensor in named:
            _, dtype, shape = _signature(name, tensor)
            plan.names.append(name)
            plan.dtype_names.append(dtype)
            plan.shapes.append(shape)
        return plan

    @property
    def nbytes(self) -> int:
        return sum(math.prod(s) * getattr(torch, d).itemsize for s, d in zip(self.shapes, self.dtype_names))

    def update_info(self) -> dict:
        return {"names": self.names, "dtype_names": self.dtype_names, "shapes": self.shapes}

    def checked(self, named: Iterable[tuple[str, torch.Tensor]],
                device: torch.device | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """``named`` in order, each pair checked against the plan (and moved to ``device``). The workers size their
        receive buffers from the plan, so a tensor that disagrees would split the stream differently on each side."""
        count = 0
        for i, (name, tensor) in enumerate(named):
            got = _signature(name, tensor)
            if i >= len(self.names):
                raise ValueError(f"The trainer's weights have more tensors than the sync plan ({len(self.names)}); "
                                 f"the first extra is {name!r}. The model changed since init_nccl_sync.")
            want = (self.names[i], self.dtype_names[i], self.shapes[i])
            if got != want:
                raise ValueError(f"Tensor {i} of the trainer's weights is {got}, the sync plan says {want}. The model "
                                 "changed since init_nccl_sync; the engines would read the stream wrongly.")
            count = i + 1
            yield name, tensor if device is None else tensor.to(device)
        if count != len(self.names):
            raise ValueError(f"The trainer's weights have {count} tensors, the sync plan {len(self.names)}; the "
                             "engines are waiting for the rest.")


def group_layout(world_sizes: list[int]) -> tuple[list[int], int]:
    """Each engine's ``rank_offset`` and the group size, given each engine's GPU workers (member 0: trainer rank 0)."""
    offsets, member = [], 1
    for size in world_sizes:
        offsets.append(member)
        member += size
    return offsets, member


def worker_init_info(master_address: str, master_port: int, rank_offset: int, world_size: int,
                     buffer_bytes: int) -> dict:
    """One engine's ``init_info``: the fields of vLLM's ``NCCLWeightTransferInitInfo``."""
    return {"master_address": master_address, "master_port": master_port, "rank_offset": rank_offset,
            "world_size": world_size, "packed": True, "packed_buffer_size_bytes": buffer_bytes,
            "packed_num_buffers": NUM_BUFFERS}


# ---------------------------------------------------------------------------------------------- trainer side
class NcclSender:
    """Trainer rank 0's end of the group: member 0, the only sender. Lives in ``PolicyTrainer`` for one stage."""

    def __init__(self, plan: WeightPlan, master_address: str, master_port: int, world_size: int, buffer_bytes: int):
        from vllm.distributed.weight_transfer.nccl_common import trainer_init

        self.plan, self.buffer_bytes = plan, buffer_bytes
        # Returns once every engine worker has joined (the driver submitted their joins alongside).
        self.group = trainer_init({"master_address": master_address, "master_port": master_port,
                                   "world_size": world_size})

    def send(self, named: Iterable[tuple[str, torch.Tensor]], version: int) -> dict:
        from vllm.distributed.weight_transfer.packed_tensor import packed_nccl_broadcast_producer

        t0 = time.perf_counter()
        device = torch.device("cuda", torch.cuda.current_device())
        packed_nccl_broadcast_producer(iterator=self.plan.checked(named, device), group=self.group, src=0,
                                       post_iter_func=lambda item: item[1], buffer_size_bytes=self.buffer_bytes,
                                       num_buffers=NUM_BUFFERS)
        torch.cuda.current_stream().synchronize()
        return {"version": version, "seconds": time.perf_counter() - t0, "bytes": self.plan.nbytes}


# ---------------------------------------------------------------------------------------------- driver side
def init_nccl_sync(trainers, rollout, bucket_mb: float) -> WeightPlan:
    """Build the stage's NCCL group (step 0 of the contract) and return rank 0's plan. ``trainers`` and ``rollout``
    are ``orchestrator.cluster.ActorGroup``s whose engines have loaded their checkpoint."""
    import ray

    address, port = ray.get(trainers.actors[0].address.remote())
    offsets, world = group_layout(ray.get([w.engine_world_size.remote() for w in rollout.actors]))
    size = bucket_bytes(bucket_mb)
    joins = [w.init_nccl_sync.remote(worker_init_info(address, port, offset, world, size))
             for w, offset in zip(rollout.actors, offsets)]
    opens = [t.init_nccl_sync.remote(address, port, world, size) for t in trainers.actors]
    return _get_all(joins + opens)[len(joins)]


def sync_weights_nccl(trainers, rollout, version: int, plan: WeightPlan) -> dict:
    """Send the trainers' current weights to every engine over the stage's NCCL group and tag them ``version``.
    Blocks until every worker has finalised, so a generate issued afterwards sees only the new weights."""
    t0 = time.perf_counter()
    update_info = plan.update_info()
    receiving = [w.update_weights_nccl.remote(update_info, version) for w in rollout.actors]
    sending = [t.send_weights_nccl.remote(version) for t in trainers.actors]  # ranks > 0 join rank 0's gather
    results = _get_all(receiving + sending)
    workers = results[: len(receiving)]
    sent = results[len(receiving)]
    return {"seconds": time.perf_counter() - t0, "send_seconds": sent["seconds"], "bytes": sent["bytes"],
            "tensors": len(plan.names), "version": version, "workers": workers}


def _get_all(refs: list) -> list:
    """``ray.get(refs)``, but the first failure is raised as soon as it happens: a failed member leaves the others
    blocked in an NCCL call that never completes, so waiting for all of them would hang."""
    import ray

    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        ray.get(done)
    return ray.get(list(refs))

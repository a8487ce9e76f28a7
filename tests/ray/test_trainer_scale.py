"""PolicyTrainer's scale pieces on two gloo ranks (actors/trainer_zero.py): the reference placed and sharded like
the policy, its refresh every k steps, and the per-module weight stream the NCCL sync sends, against the whole
state it replaces. The same code runs on GPUs with NCCL; there it has not run yet (tests/gpu)."""

from __future__ import annotations

import pytest
import torch

from actors.trainer import PolicyTrainer
from actors.types import RLBatch, RLMicroBatch
from orchestrator.algorithms.grpo import GRPOSpec
from orchestrator.cluster import spawn_group
from orchestrator.config import ClusterSpec, RoleResources, TrainerSpec

RANKS = 2
CLUSTER = ClusterSpec(trainer=RoleResources(workers=RANKS, cpus=1, threads=1))


class Probe(PolicyTrainer):
    """A trainer rank that also reports what these tests look at."""

    def placement(self) -> dict:
        import deepspeed

        def describe(model) -> dict:
            module = model.module if isinstance(model, deepspeed.DeepSpeedEngine) else model
            params = list(module.parameters())
            return {"engine": isinstance(model, deepspeed.DeepSpeedEngine),
                    "devices": sorted({str(p.device) for p in params}),
                    "dtypes": sorted({str(p.dtype) for p in params if p.dim() > 1}),
                    "full": sum(getattr(p, "ds_numel", p.numel()) for p in params),
                    "held": sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params),
                    "grad": any(p.requires_grad for p in params)}

        return {"policy": describe(self.engine), "reference": describe(self.reference),
                "engine_device": str(self.engine_device)}

    def streamed_and_whole(self):
        streamed = [(name, tensor.cpu().clone()) for name, tensor in self._hf_stream()]
        whole = self._hf_state()
        return streamed, None if whole is None else [(n, t.cpu()) for n, t in whole.items()]


def _probes(path, zero_stage: int, grpo: GRPOSpec):
    group = spawn_group("trainer", Probe, CLUSTER.trainer, CLUSTER, lambda rank: ((rank, RANKS), {"threads": 1}))
    addr, port = group.call_one(0, "address")
    group.call("init_distributed", addr, port)
    train = TrainerSpec(micro_batch_size=2, zero_stage=zero_stage, optim={"lr": 1e-2, "schedule": "constant"})
    group.call("setup", train.settings(str(path), total_steps=4, grad_accum=1, fp8=False,
                                       loss=grpo.loss_settings(temperature=1.0)))
    return group


def _batch(seed: int) -> RLBatch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 390, (2, 16), generator=g)
    mask = torch.ones(2, 15, dtype=torch.bool)
    return RLBatch([RLMicroBatch(ids, mask, torch.tensor([1.0, -1.0]))], normaliser=float(RANKS * mask.sum()))


@pytest.mark.parametrize("arch,zero_stage", [("v3", 3), ("qwen2", 3), ("qwen2", 2)])
def test_reference_placement_refresh_and_weight_stream(ray_local, tiny_checkpoint, tiny_v3, arch, zero_stage):
    path = tiny_v3 if arch == "v3" else tiny_checkpoint
    grpo = GRPOSpec(n=2, kl_coef=0.1, ref_refresh_every=2)
    group = _probes(path, zero_stage, grpo)
    try:
        placed = group.call("placement")
        kls = [group.call_each("rl_step", [(_batch(10 * step + rank),) for rank in range(RANKS)])[0].extra["kl"]
               for step in range(3)]
        streamed, whole = group.call("streamed_and_whole")[0]
        others = group.call("streamed_and_whole")[1]
    finally:
        group.shutdown()
    policy, reference = placed[0]["policy"], placed[0]["reference"]
    # Placed like the policy: same device and compute dtype, frozen; under ZeRO-3 an engine of its own whose
    # parameters are partitioned over the ranks exactly like the policy's, under ZeRO 0-2 a full copy.
    assert reference["devices"] == policy["devices"] == [placed[0]["engine_device"]]
    assert reference["dtypes"] == policy["dtypes"] and not reference["grad"] and policy["grad"]
    assert reference["full"] == policy["full"] and reference["engine"] == (zero_stage == 3)
    if zero_stage == 3:
        assert [p["reference"]["held"] for p in placed] == [p["policy"]["held"] for p in placed]
        assert sum(p["reference"]["held"] for p in placed) < 1.1 * reference["full"]  # a shard each, not a copy
    else:
        assert reference["held"] == reference["full"]
    # Refreshed after steps 2: step 1 starts at the reference (KL 0), step 2 has moved away, step 3 starts anew.
    assert kls[0] == pytest.approx(0.0, abs=1e-9) and kls[1] > 1e-4 and kls[2] == pytest.approx(0.0, abs=1e-9), kls
    # The NCCL path's stream is the object-store path's whole state, gathered one module at a time.
    assert [n for n, _ in streamed] == [n for n, _ in whole] and len(whole) > 10
    assert all(a.dtype == b.dtype and torch.equal(a, b) for (_, a), (_, b) in zip(streamed, whole))
    assert others == ([], None)

"""NCCL weight sync from trainer rank 0 into a vLLM engine's GPU worker (actors/weight_sync_nccl.py): after SFT steps
move the trainer's weights, one sync makes the engine serve exactly the trainer's model, tagged with the new version.

Needs two CUDA GPUs (NCCL refuses two members of one group on the same GPU: one for the trainer, one for the
engine), the GPU install profile's vLLM, Ray and DeepSpeed. It skips wherever those are missing, which so far is
everywhere it has been collected: it has never run."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (trainer and engine)")
for _module in ("ray", "deepspeed", "vllm"):
    pytest.importorskip(_module, reason=f"the GPU profile's {_module} is not installed")


def test_nccl_sync_serves_the_trainers_weights(tiny_checkpoint, sft_rows, tmp_path):
    import ray
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actors.weight_sync_nccl import init_nccl_sync, nccl_available, sync_weights_nccl
    from orchestrator.cluster import spawn_rollout, spawn_trainers
    from orchestrator.config import ClusterSpec, RoleResources, RolloutEngineSpec, SFTTrainSpec
    from orchestrator.data.chat import encode_prompt, encode_sft
    from orchestrator.stages.sft import _shard
    from tests.conftest import ROOT, teacher_forced

    if not nccl_available():
        pytest.skip("this vLLM has no NCCL weight-transfer engine")
    ray.init(address="local", num_cpus=4, num_gpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    cluster = ClusterSpec(trainer=RoleResources(workers=1, cpus=1, gpus=1),
                          rollout=RoleResources(workers=1, cpus=1, gpus=1))
    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    trainers = rollout = None
    try:
        trainers = spawn_trainers(cluster.trainer, cluster)
        rollout = spawn_rollout(cluster.rollout, cluster, RolloutEngineSpec(
            max_model_len=256, dtype="bfloat16", gpu_memory_utilization=0.3).settings(nccl_weight_transfer=True))
        train = SFTTrainSpec(steps=3, batch_size=8, micro_batch_size=4, optim={"lr": 3e-3, "schedule": "constant"})
        trainers.call("setup", train.settings(str(tiny_checkpoint), total_steps=3, grad_accum=2, fp8=False))
        rollout.call("load", str(tiny_checkpoint), 0)
        plan = init_nccl_sync(trainers, rollout, bucket_mb=0.05)  # small buckets: tensors straddle them
        seq = encode_prompt(tok, sft_rows[2]) + tok(sft_rows[2]["response"], add_special_tokens=False)["input_ids"]
        [[before]] = rollout.call("prompt_logprobs", [seq])
        examples = [encode_sft(tok, r, 256) for r in sft_rows[:8]]
        for _ in range(3):
            trainers.call("sft_step", _shard(examples, 1, tok.pad_token_id)[0])
        info = sync_weights_nccl(trainers, rollout, version=5, plan=plan)
        [[served]] = rollout.call("prompt_logprobs", [seq])
        trainers.call("save_hf", str(tmp_path / "trained"))
    finally:
        for group in (rollout, trainers):
            if group is not None:
                group.shutdown()
        ray.shutdown()
    expected = teacher_forced(AutoModelForCausalLM.from_pretrained(str(tmp_path / "trained")), seq)
    print(f"\nNCCL sync: {info['seconds']:.3f} s, {info['bytes']} bytes, {info['tensors']} tensors")
    assert info["version"] == 5 and info["tensors"] == len(plan.names) and info["bytes"] == plan.nbytes
    assert max(abs(a - b) for a, b in zip(before[1:], expected)) > 1e-2, "training did not move the weights"
    # The engine computes in bf16, the reference in fp32 from the bf16 weights saved: bf16 logit rounding only.
    assert max(abs(a - b) for a, b in zip(served[1:], expected)) < 5e-2

"""In-memory weight sync (actors/weight_sync.py): after training moves the trainer's weights, a RolloutWorker still
serving the original checkpoint takes the new weights in buckets and then serves exactly the trainer's model,
tagged with the new version."""

from __future__ import annotations


import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from actors.model import DeepseekV3ForCausalLM
from actors.types import SamplingParams
from actors.weight_sync import sync_weights
from orchestrator.cluster import spawn_rollout, spawn_trainers
from orchestrator.config import ClusterSpec, InitSpec, RoleResources, RolloutEngineSpec, SFTTrainSpec
from orchestrator.data.chat import encode_prompt, encode_sft
from orchestrator.fresh_model import materialize
from orchestrator.stages.sft import _shard
from tests.conftest import teacher_forced

CLUSTER = ClusterSpec(trainer=RoleResources(workers=1, cpus=1, threads=1),
                      rollout=RoleResources(workers=1, cpus=1, threads=1))
BUCKET_MB = 0.05  # small enough that layers straddle buckets, which the receiver must handle


@pytest.fixture(scope="module")
def rollout(ray_local):
    group = spawn_rollout(CLUSTER.rollout, CLUSTER, RolloutEngineSpec(max_model_len=256).settings())
    yield group
    group.shutdown()


def _trained(path, sft_rows, zero_stage: int, steps: int = 3):
    """A trainer on ``path`` whose weights ``steps`` optimizer steps have moved away from the checkpoint."""
    tok = AutoTokenizer.from_pretrained(str(path))
    examples = [encode_sft(tok, r, 256) for r in sft_rows[:8]]
    train = SFTTrainSpec(steps=steps, batch_size=8, micro_batch_size=4, zero_stage=zero_stage,
                         optim={"lr": 3e-3, "schedule": "constant"})
    trainers = spawn_trainers(CLUSTER.trainer, CLUSTER)
    trainers.call("setup", train.settings(str(path), total_steps=steps, grad_accum=2, fp8=False))
    for _ in range(steps):
        trainers.call("sft_step", _shard(examples, 1, tok.pad_token_id)[0])
    return trainers, tok


def _sync_and_check(rollout, trainers, tok, served_path, sft_rows, tmp_path, load_reference):
    seq = encode_prompt(tok, sft_rows[2]) + tok(sft_rows[2]["response"], add_special_tokens=False)["input_ids"]
    rollout.call("load", str(served_path), 0)
    [[before]] = rollout.call("prompt_logprobs", [seq])

    info = sync_weights(trainers, rollout, version=7, bucket_mb=BUCKET_MB)
    [[served]] = rollout.call("prompt_logprobs", [seq])
    [rollouts] = rollout.call("generate", [seq[:20]], SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=0))

    trainers.call("save_hf", str(tmp_path / "trained"))
    expected = teacher_forced(load_reference(tmp_path / "trained"), seq)
    print(f"\nsync: {info['seconds']:.2f} s (pull {info['pull_seconds']:.2f} s), {info['buckets']} buckets of "
          f"<= {BUCKET_MB} MB, worker-side {info['workers'][0]['seconds']:.2f} s")
    assert info["buckets"] > 1 and info["workers"][0]["buckets"] == info["buckets"]
    # One copy of the weights: the saved checkpoint's tensors, which add only a small header on disk.
    on_disk = sum(f.stat().st_size for f in (tmp_path / "trained").glob("*.safetensors"))
    assert info["bytes"] <= on_disk < info["bytes"] + 2**16
    assert max(abs(a - b) for a, b in zip(before[1:], expected)) > 1e-2, "training did not move the weights"
    assert max(abs(a - b) for a, b in zip(served[1:], expected)) < 1e-3
    assert all(r.policy_version == 7 for r in rollouts)
    return info


def test_qwen2_syncs_in_memory_exactly(rollout, tiny_checkpoint, sft_rows, tmp_path):
    trainers, tok = _trained(tiny_checkpoint, sft_rows, zero_stage=2)
    try:
        _sync_and_check(rollout, trainers, tok, tiny_checkpoint, sft_rows, tmp_path,
                        lambda p: AutoModelForCausalLM.from_pretrained(str(p)))
    finally:
        trainers.shutdown()


def test_deepseek_v3_syncs_in_memory_exactly(rollout, tiny_v3, sft_rows, tmp_path):
    """MoE experts, trained router biases and MLA projections all arrive; ZeRO-3 gathers them first."""
    trainers, tok = _trained(tiny_v3, sft_rows, zero_stage=3)
    try:
        _sync_and_check(rollout, trainers, tok, tiny_v3, sft_rows, tmp_path,
                        lambda p: DeepseekV3ForCausalLM.from_pretrained(str(p)).eval())
    finally:
        trainers.shutdown()


def test_tied_embeddings_sync_in_memory_exactly(rollout, sft_rows, tmp_path):
    """Qwen2.5/Qwen3-style tied embeddings: the checkpoint has no lm_head, the reload refills the embedding the
    head shares, and the receiver repacks the head's CPU GEMM from it. A stale head would serve the old logits."""
    init = InitSpec.model_validate({
        "arch": "qwen2", "seed": 0,
        "config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "num_key_value_heads": 1, "tie_word_embeddings": True},
        "tokenizer": {"vocab_size": 400, "train_on": ["sft"]},
    })
    tied = materialize("tied", init, (r["prompt"] + "\n" + r["response"] for r in sft_rows), tmp_path / "tied")
    assert AutoModelForCausalLM.from_pretrained(str(tied)).config.tie_word_embeddings
    trainers, tok = _trained(tied, sft_rows, zero_stage=2)
    try:
        _sync_and_check(rollout, trainers, tok, tied, sft_rows, tmp_path,
                        lambda p: AutoModelForCausalLM.from_pretrained(str(p)))
    finally:
        trainers.shutdown()

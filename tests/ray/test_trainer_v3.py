"""Our DeepSeek-V3 hosted by the PolicyTrainer: it trains under DeepSpeed, balances its experts, and the
checkpoint it writes is served by vLLM with the same teacher-forced logprobs."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from actors.model import DeepseekV3ForCausalLM
from orchestrator.cluster import spawn_rollout, spawn_trainers
from orchestrator.config import ClusterSpec, RoleResources, RolloutEngineSpec, SFTTrainSpec
from orchestrator.data.chat import encode_prompt, encode_sft
from orchestrator.fresh_model import materialize
from orchestrator.stages.sft import _shard
from tests.conftest import teacher_forced


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_v3_trains_balances_and_serves_in_vllm(ray_local, tiny_v3, sft_rows, tmp_path, zero_stage):
    cluster = ClusterSpec(trainer=RoleResources(workers=1, cpus=1, threads=1),
                          rollout=RoleResources(workers=1, cpus=1, threads=1))
    tok = AutoTokenizer.from_pretrained(str(tiny_v3))
    examples = [encode_sft(tok, r, 256) for r in sft_rows[:8]]
    train = SFTTrainSpec(steps=6, batch_size=8, micro_batch_size=4, zero_stage=zero_stage,
                         optim={"lr": 3e-3, "schedule": "constant"})
    trainers = spawn_trainers(cluster.trainer, cluster)
    try:
        trainers.call("setup", train.settings(str(tiny_v3), total_steps=6, grad_accum=2, fp8=False))
        steps = [trainers.call("sft_step", _shard(examples, 1, tok.pad_token_id)[0])[0] for _ in range(6)]
        out = tmp_path / "ckpt"
        trainers.call("save_hf", str(out))
    finally:
        trainers.shutdown()
    assert steps[-1].loss < 0.9 * steps[0].loss, [s.loss for s in steps]
    assert "moe/load_max_over_mean" in steps[0].extra and steps[0].extra["moe/load_max_over_mean"] >= 1.0
    assert steps[-1].extra["moe/router_bias_abs_mean"] > 0  # the balancing update moved the biases

    model = DeepseekV3ForCausalLM.from_pretrained(str(out)).eval()
    biases = [m.e_score_correction_bias for m in model.modules() if hasattr(m, "e_score_correction_bias")]
    assert any(b.abs().sum() > 0 for b in biases), "the exported checkpoint lost the trained router biases"
    seq = encode_prompt(tok, sft_rows[3]) + tok(sft_rows[3]["response"], add_special_tokens=False)["input_ids"]
    ours = teacher_forced(model, seq)
    rollout = spawn_rollout(cluster.rollout, cluster, RolloutEngineSpec(max_model_len=256).settings())
    try:
        rollout.call("load", str(out), 6)
        [[served]] = rollout.call("prompt_logprobs", [seq])
    finally:
        rollout.shutdown()
    assert max(abs(a - b) for a, b in zip(served[1:], ours)) < 1e-3


def test_make_run_model_is_served_exactly(ray_local, sft_rows, tmp_path):
    """The V3 config of pipelines/tiny_sft.yaml: vLLM's rollouts see the same model the trainer trains."""
    from orchestrator.yaml_errors import load_pipeline
    from tests.conftest import ROOT

    init = load_pipeline(ROOT / "pipelines" / "tiny_sft.yaml").models["tiny"].init
    path = materialize("tiny", init, (r["prompt"] + "\n" + r["response"] for r in sft_rows), tmp_path / "m")
    model = DeepseekV3ForCausalLM.from_pretrained(str(path)).eval()
    for router in (m for m in model.modules() if hasattr(m, "e_score_correction_bias")):
        router.e_score_correction_bias.normal_(0, 0.1)  # a trained router's bias is not zero
    model.save_pretrained(str(path))
    seq = list(range(5, 80))
    ours = teacher_forced(model, seq)
    cluster = ClusterSpec(rollout=RoleResources(workers=1, cpus=1, threads=1))
    rollout = spawn_rollout(cluster.rollout, cluster, RolloutEngineSpec(max_model_len=256).settings())
    try:
        rollout.call("load", str(path), 0)
        [[served]] = rollout.call("prompt_logprobs", [seq])
    finally:
        rollout.shutdown()
    assert max(abs(a - b) for a, b in zip(served[1:], ours)) < 1e-3

"""PolicyTrainer on local Ray with DeepSpeed (gloo): it learns, ranks agree, checkpoints load."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from actors.trainer import PolicyTrainer, lr_lambda
from orchestrator.cluster import spawn_trainers
from orchestrator.config import ClusterSpec, RoleResources, SFTTrainSpec
from orchestrator.data.chat import encode_sft
from orchestrator.stages.fanout import ranks_agree
from orchestrator.stages.sft import _shard


def _settings(path, zero_stage: int, micro_batch_size: int = 2):
    spec = SFTTrainSpec(steps=10, batch_size=8, micro_batch_size=micro_batch_size, zero_stage=zero_stage,
                        optim={"lr": 3e-3, "schedule": "constant", "grad_clip": 1.0})
    return spec.settings(str(path), total_steps=10, grad_accum=2, fp8=False)


def _batch(tiny_checkpoint, sft_rows, n=8):
    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    return [encode_sft(tok, r, 256) for r in sft_rows[:n]], tok.pad_token_id


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_two_ranks_learn_in_lockstep_and_export(ray_local, tiny_checkpoint, sft_rows, tmp_path, zero_stage):
    workers = 2
    cluster = ClusterSpec(trainer=RoleResources(workers=workers, cpus=1, threads=1))
    group = spawn_trainers(cluster.trainer, cluster)
    try:
        # batch 8 = 2 ranks x 2 micro-batches x 2 sequences: gradient accumulation is exercised too.
        group.call("setup", _settings(tiny_checkpoint, zero_stage))
        before = group.call("parameter_checksum")
        examples, pad = _batch(tiny_checkpoint, sft_rows)
        losses = []
        for _ in range(6):
            metrics = group.call_each("sft_step", [(b,) for b in _shard(examples, workers, pad)])
            assert metrics[0].loss == pytest.approx(metrics[1].loss)  # both report the global token mean
            losses.append(metrics[0].loss)
        after = ranks_agree(group)   # what every SFT and RL stage checks at its end: bit-identical ranks
        assert before[0] == before[1]
        assert after[0] != pytest.approx(before[0], rel=1e-9), "weights did not change"
        assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.85 * losses[0], losses
        out = tmp_path / "ckpt"
        group.call("save_hf", str(out))
    finally:
        group.shutdown()
    model = AutoModelForCausalLM.from_pretrained(str(out))
    original = AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint))
    assert sum(float(p.double().sum()) for p in model.parameters()) == pytest.approx(after[0], rel=1e-6)
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, original.model.layers[0].mlp.up_proj.weight)
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2"
    assert (out / "tokenizer.json").exists()


def test_loss_is_a_global_token_mean(ray_local, tiny_checkpoint, sft_rows):
    """One rank's step loss equals the masked cross-entropy computed directly with transformers."""
    cluster = ClusterSpec(trainer=RoleResources(workers=1, cpus=1, threads=1))
    group = spawn_trainers(cluster.trainer, cluster)
    try:
        group.call("setup", _settings(tiny_checkpoint, 2, micro_batch_size=4))
        examples, pad = _batch(tiny_checkpoint, sft_rows)
        [batch] = _shard(examples, 1, pad)
        [metrics] = group.call("sft_step", batch)
    finally:
        group.shutdown()
    model = AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint))
    with torch.no_grad():
        logits = model(batch.input_ids).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.input_ids[:, 1:].reshape(-1),
                                            reduction="none")
    mask = batch.loss_mask[:, 1:].reshape(-1).float()
    expected = float((nll * mask).sum() / mask.sum())
    assert metrics.loss == pytest.approx(expected, rel=1e-4)
    assert metrics.tokens == int(mask.sum()) == batch.global_tokens


def test_lr_schedule_shapes():
    warm = lr_lambda("cosine", warmup=4, total=20, min_ratio=0.1)
    assert [round(warm(s), 2) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warm(20) == pytest.approx(0.1) and 0.1 < warm(12) < 1.0
    assert lr_lambda("linear", 0, 10, 0.0)(5) == pytest.approx(0.5)
    assert lr_lambda("constant", 0, 10, 0.0)(9) == 1.0
    # Decay over the first 10 of 30 steps, then hold the floor (train on until early stopping ends the stage).
    held = lr_lambda("cosine", 0, 30, 0.05, decay_steps=10)
    assert held(5) == pytest.approx(0.525)
    assert held(10) == held(25) == pytest.approx(0.05)


def test_trainer_is_a_plain_class():
    assert PolicyTrainer.__name__ == "PolicyTrainer" and not hasattr(PolicyTrainer, "remote")

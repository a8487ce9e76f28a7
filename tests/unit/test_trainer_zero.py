"""The trainer's device and scale pieces that can be pinned without a GPU (actors/trainer_zero.py): batches moved
whole to the engine's device, the forward's device guard, the dtype default per device, gradient checkpointing,
and the per-module weight stream against the whole-state export it replaces on the NCCL path."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from actors.model import DeepseekV3ForCausalLM, FP8Recipe
from actors.model.checkpoint import export_state, export_stream
from actors.trainer_zero import (batch_to, check_on, compute_dtype, enable_gradient_checkpointing, gathered,
                                 gathered_chunks)
from actors.types import RLMicroBatch, SFTBatch
from orchestrator.algorithms.grpo import GRPOSpec
from orchestrator.config import TrainerSpec

META = torch.device("meta")


def test_batches_move_to_the_engine_device_whole():
    """Every tensor field goes (a field added later is moved too); None and ints stay as they are. The meta device
    stands in for CUDA: a tensor left behind would still say cpu."""
    ids, mask = torch.ones(2, 5, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool)
    rl = batch_to(RLMicroBatch(ids, mask, torch.ones(2), old_logprobs=None, rollout_logprobs=torch.zeros(2, 4)), META)
    assert {rl.input_ids.device, rl.loss_mask.device, rl.advantages.device, rl.rollout_logprobs.device} == {META}
    assert rl.old_logprobs is None and rl.input_ids.dtype == torch.long
    sft = batch_to(SFTBatch(ids, mask, global_tokens=7), META)
    assert sft.input_ids.device == sft.loss_mask.device == META and sft.global_tokens == 7
    same = SFTBatch(ids, mask, 7)
    assert batch_to(same, torch.device("cpu")).input_ids is ids  # on the device already: the very tensors


def test_the_forward_refuses_inputs_on_another_device():
    check_on(torch.device("cpu"), input_ids=torch.ones(1, 3), labels=None)
    with pytest.raises(RuntimeError, match="labels is on meta, the engine on cpu"):
        check_on(torch.device("cpu"), input_ids=torch.ones(1, 3), labels=torch.ones(1, 3, device=META))


def test_dtype_defaults_to_bf16_on_gpu_and_fp32_on_cpu():
    assert TrainerSpec().dtype == "auto"
    assert compute_dtype("auto", "cpu") == torch.float32 and compute_dtype("auto", "cuda") == torch.bfloat16
    assert compute_dtype("float32", "cuda") == torch.float32 and compute_dtype("bfloat16", "cpu") == torch.bfloat16


def test_reference_refresh_needs_a_reference():
    assert GRPOSpec(kl_coef=0.01, ref_refresh_every=4).loss_settings(1.0).ref_refresh_every == 4
    assert GRPOSpec().loss_settings(1.0).ref_refresh_every is None
    with pytest.raises(ValueError, match="kl_coef is 0"):
        GRPOSpec(ref_refresh_every=4)
    with pytest.raises(ValueError):
        GRPOSpec(kl_coef=0.01, ref_refresh_every=0)
    settings = TrainerSpec(gradient_checkpointing=True).settings("m", total_steps=1, grad_accum=1, fp8=False)
    assert settings.gradient_checkpointing and settings.dtype == "auto"


def _layer_calls_and_grads(model, layer, ids):
    calls, forward = [], layer.forward

    def counted(*args, **kwargs):  # forward hooks do not fire in the recomputation: count the forward itself
        calls.append(1)
        return forward(*args, **kwargs)

    layer.forward = counted
    model.train()
    model.zero_grad()
    model(input_ids=ids).logits.float().square().mean().backward()
    del layer.forward
    return len(calls), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["qwen2", "v3"])
def test_gradient_checkpointing_recomputes_layers_and_keeps_gradients(arch, tiny_checkpoint, tiny_v3):
    """Each decoder layer runs twice per forward+backward (once more in backward) and the gradients stay exact."""
    if arch == "v3":
        model = DeepseekV3ForCausalLM.from_pretrained(tiny_v3)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint), dtype=torch.float32)
    layer = model.model.layers[-1]
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    plain_calls, plain = _layer_calls_and_grads(model, layer, ids)
    enable_gradient_checkpointing(model)
    calls, grads = _layer_calls_and_grads(model, layer, ids)
    assert (plain_calls, calls) == (1, 2)
    assert plain.keys() == grads.keys() and all(torch.allclose(plain[n], grads[n], rtol=1e-5, atol=1e-7)
                                                for n in plain)


@pytest.mark.parametrize("export", ["master", "bf16", "fp8"])
def test_v3_weight_stream_is_the_whole_state_export(tiny_v3, export):
    """What the NCCL sync streams module by module (MTP copies of embedding and head last, FP8 scales beside their
    weights) is, name for name and bit for bit, what save_pretrained and the object-store sync carry."""
    model = DeepseekV3ForCausalLM.from_pretrained(tiny_v3, fp8=FP8Recipe(export=export))
    whole, _ = export_state(model)
    streamed = list(export_stream(model, gathered_chunks(model, zero3=False, keep=True),
                                  lambda names: gathered(model, names, zero3=False, keep=True)))
    assert [n for n, _ in streamed] == list(whole)
    assert any(n.endswith("weight_scale_inv") for n in whole) == (export == "fp8")
    assert all(t.dtype == whole[n].dtype and torch.equal(t, whole[n]) for n, t in streamed)
    others = list(export_stream(model, gathered_chunks(model, zero3=False, keep=False),
                                lambda names: gathered(model, names, zero3=False, keep=False)))
    assert others == []  # ranks other than 0 take part in the gathers and send nothing

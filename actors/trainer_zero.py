"""What PolicyTrainer needs to run at scale: models built sharded, the reference placed like the policy, batches on
the engine's device, and the weights streamed one module at a time.

- Building (``build_model``): under ZeRO-3 a model is created inside ``deepspeed.zero.Init`` (our DeepSeek-V3
  through ``load_pretrained_zero3``; transformers' models through its DeepSpeed integration, ``HfDeepSpeedConfig``),
  so no rank ever holds the whole model. ZeRO 0-2 keep a full copy of the parameters on every rank by design.
- The reference (``build_reference``): a second model placed like the policy. Under ZeRO-3 it is its own DeepSpeed
  engine without optimizer (parameters partitioned over the same ranks, gathered layer by layer in its forward);
  under ZeRO 0-2, whose parameters are replicated anyway, a frozen module on the engine's device in the compute
  dtype. ``refresh_reference`` copies the policy's current weights into it.
- Devices (``batch_to``, ``check_on``): DeepSpeed's forward does not move its inputs, so each micro-batch is moved to
  ``engine.device`` before the forward, and the forward refuses a tensor elsewhere.
- Streaming (``gathered_chunks``): the weights in ``state_dict`` order, one module's parameters and buffers at a
  time, gathered from their ZeRO-3 partitions just for that module; what the NCCL sync sends, so rank 0 never
  holds more than a module and a send buffer beyond its own shard.

On CPU (gloo) every step of this is exercised by the tests; on GPUs (NCCL, bf16) none of it has run yet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")


def compute_dtype(name: str, device: str) -> torch.dtype:
    """``auto``: bf16 on GPU ranks (DeepSpeed's bf16 mode, fp32 master weights in the optimizer), fp32 on CPU, where
    bf16 matmuls buy nothing and the tiny recipe's numbers were measured."""
    if name == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


# ---------------------------------------------------------------------------------------------- building
def build_model(path: str, fp8: bool, ds_config: dict, load) -> nn.Module:
    """The policy (or a reference) for one DeepSpeed engine. ZeRO-3: built partitioned (see the module docstring);
    otherwise ``load(path, torch.float32, fp8)``, the whole model in fp32 (DeepSpeed's bf16 mode casts it)."""
    if ds_config["zero_optimization"]["stage"] != 3:
        return load(path, torch.float32, fp8)
    import json
    from pathlib import Path

    if json.loads((Path(path) / "config.json").read_text()).get("model_type") == "deepseek_v3":
        from actors.model import DeepseekV3ForCausalLM
        from actors.model.checkpoint import load_pretrained_zero3

        return load_pretrained_zero3(DeepseekV3ForCausalLM, path, fp8, ds_config)
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    # transformers reads the DeepSpeed config through a module-level weak reference while this object lives:
    # from_pretrained then builds under zero.Init and loads into the partitions. Dropped right after.
    hf_ds = HfDeepSpeedConfig(ds_config)
    try:
        return load(path, torch.float32, fp8)
    finally:
        unset_hf_deepspeed_config()
        del hf_ds


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing per decoder layer: transformers' models through their own switch (non-reentrant, so
    it works under ZeRO-3 and with frozen inputs), our DeepSeek-V3 through its ``run_block`` (torch.utils.checkpoint
    around each block)."""
    if type(model).__name__ == "DeepseekV3ForCausalLM":
        model.gradient_checkpointing_enable()
        return
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False  # a KV cache is built only to be thrown away in training


def build_reference(policy_engine, path: str, fp8: bool, ds_config: dict, dtype: torch.dtype, load):
    """The KL's reference policy, frozen, placed like ``policy_engine``'s model (see the module docstring). The
    result is called like the policy: ``reference(input_ids=...)``."""
    if ds_config["zero_optimization"]["stage"] != 3:
        model = load(path, dtype, fp8).eval().requires_grad_(False)
        return model.to(policy_engine.device)
    import deepspeed

    model = build_model(path, fp8, ds_config, load).eval().requires_grad_(False)
    # No optimizer: DeepSpeed's ZeRO-3 parameter offload alone (partitions, gathered per module in forward).
    config = {k: v for k, v in ds_config.items() if k not in ("gradient_clipping", "zero_allow_untested_optimizer")}
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


@torch.no_grad()
def refresh_reference(reference, policy: nn.Module, zero3: bool) -> None:
    """Copy ``policy``'s parameters and buffers into ``reference`` (the same architecture). Under ZeRO-3 each module
    pair is gathered and rank 0's copy re-partitioned into the reference; a collective then. Router biases and other
    buffers are replicated: copied on every rank."""
    import deepspeed

    target = reference.module if isinstance(reference, deepspeed.DeepSpeedEngine) else reference
    for mine, theirs in zip(target.modules(), policy.modules(), strict=True):
        dst_params, src_params = list(mine.parameters(recurse=False)), list(theirs.parameters(recurse=False))
        if dst_params:
            # The policy's gather only reads; the reference's is re-partitioned from rank 0's copy on leaving.
            with deepspeed.zero.GatheredParameters(src_params, enabled=zero3), \
                    deepspeed.zero.GatheredParameters(dst_params, modifier_rank=0, enabled=zero3):
                for dst, src in zip(dst_params, src_params, strict=True):
                    dst.data.copy_(src.data)
        for dst, src in zip(mine.buffers(recurse=False), theirs.buffers(recurse=False), strict=True):
            dst.copy_(src)


# ---------------------------------------------------------------------------------------------- devices
def batch_to(batch: T, device: torch.device) -> T:
    """A copy of a message dataclass (``SFTBatch``, ``RLMicroBatch``) with every tensor field on ``device``; on the
    device already, the same tensors (``Tensor.to`` returns its input), so CPU runs compute exactly as before."""
    moved = {f.name: value.to(device) for f in dataclasses.fields(batch)
             if isinstance(value := getattr(batch, f.name), torch.Tensor)}
    return dataclasses.replace(batch, **moved)


def check_on(device: torch.device, **tensors: torch.Tensor | None) -> None:
    """Refuse a forward whose inputs are not on the engine's device: DeepSpeed's forward does not move them, and a
    CPU tensor reaching a CUDA model fails deep inside the first layer."""
    for name, tensor in tensors.items():
        if tensor is not None and tensor.device != device:
            raise RuntimeError(f"PolicyTrainer: {name} is on {tensor.device}, the engine on {device}; batches must be "
                               "moved to the engine's device before its forward (trainer_zero.batch_to).")


# ---------------------------------------------------------------------------------------------- streaming
def gathered_chunks(module: nn.Module, zero3: bool, keep: bool) -> Iterator[dict[str, torch.Tensor]]:
    """``module.state_dict()``, in its order, as one dict per submodule (its own parameters and persistent buffers),
    each gathered from its ZeRO-3 partitions only while it is read. ``keep`` (rank 0): the dicts hold the tensors
    (copies under ZeRO-3, whose gathered storage is released on leaving the gather); other ranks get empty dicts,
    having taken part in the gathers. A collective under ZeRO-3: every rank must exhaust it, in step."""
    import deepspeed

    for prefix, sub in module.named_modules(remove_duplicate=False):
        prefix = prefix + "." if prefix else ""
        params = [(n, p) for n, p in sub._parameters.items() if p is not None]
        buffers = [(n, b) for n, b in sub._buffers.items()
                   if b is not None and n not in sub._non_persistent_buffers_set]
        if not params and not buffers:
            continue
        unique = list({id(p): p for _, p in params}.values())
        with deepspeed.zero.GatheredParameters(unique, enabled=zero3 and bool(unique)):
            if not keep:
                yield {}
                continue
            chunk = {prefix + n: (p.detach().clone() if zero3 else p.detach()) for n, p in params}
        chunk.update((prefix + n, b.detach()) for n, b in buffers)
        yield chunk


def gathered(module: nn.Module, names: list[str], zero3: bool, keep: bool) -> dict[str, torch.Tensor]:
    """The named parameters or buffers of ``module``, gathered (copies on rank 0, ``keep``; {} elsewhere)."""
    import deepspeed

    state = dict(module.named_parameters(remove_duplicate=False)) | dict(module.named_buffers())
    tensors = [state[n] for n in names]
    params = [t for t in tensors if isinstance(t, nn.Parameter)]
    with deepspeed.zero.GatheredParameters(params, enabled=zero3 and bool(params)):
        return {n: (t.detach().clone() if zero3 else t.detach()) for n, t in zip(names, tensors)} if keep else {}

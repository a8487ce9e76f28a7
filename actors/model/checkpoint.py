"""Reading and writing Hugging Face DeepseekV3 checkpoint folders: config.json plus safetensors files.

Names go through names.py in both directions. Writing produces one `model.safetensors` with per-expert tensors,
the router bias in fp32 and the MTP layers as `model.layers.{num_hidden_layers + j}.*`, i.e. what transformers
5.x, DeepSeek's releases and vLLM read. Reading accepts any number of `*.safetensors` shards in the folder.

FP8: reading a block-wise FP8 checkpoint (config.json `quantization_config` with `quant_method: fp8`, E4M3
weights with `*.weight_scale_inv`) dequantises it into fp32 master weights. A model converted to FP8 writes (and
syncs) what its recipe's `export` says: the master weights, bf16, or E4M3 + `weight_scale_inv` (see fp8.py).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from . import names
from .config import DeepseekV3Config
from .fp8 import (SCALE_SUFFIX, FP8Recipe, check_quantization_config, convert_to_fp8, dequantize_blocks,
                  dequantize_checkpoint, export_tensors, fp8_weight_names, quantization_config)

log = logging.getLogger(__name__)


def export_state(model: nn.Module, state_dict: dict[str, torch.Tensor] | None = None,
                 ) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors a checkpoint or a weight sync carries (Hugging Face names) and the config.json keys that go with
    them: the model's own dtype, or its FP8 recipe's export format."""
    cfg: DeepseekV3Config = model.config
    tensors = names.hf_state_dict(state_dict or model.state_dict(), cfg)
    recipe: FP8Recipe | None = getattr(model, "fp8_recipe", None)
    if recipe is None or recipe.export == "master":
        return tensors, {"dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
    fp8_weights = {names.to_hf(name, cfg) for name in fp8_weight_names(model)}
    keys = {"dtype": "bfloat16"}
    if recipe.export == "fp8":
        keys["quantization_config"] = quantization_config()
    return export_tensors(tensors, fp8_weights, recipe), keys


def export_stream(model: nn.Module, chunks: Iterable[dict[str, torch.Tensor]],
                  gather: Callable[[list[str]], dict[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """``export_state``'s tensors (same names, order and values), made from ``chunks`` of our state dict (e.g. one
    module's parameters at a time, gathered from ZeRO-3 partitions) rather than the whole of it. ``gather(names)``
    hands back the named tensors once more for the MTP layers' copies of embedding and head, which come last ({}
    on ranks that only take part in the gathers: then nothing is yielded)."""
    cfg: DeepseekV3Config = model.config
    recipe: FP8Recipe | None = getattr(model, "fp8_recipe", None)
    exporting = recipe is not None and recipe.export != "master"
    fp8_weights = {names.to_hf(name, cfg) for name in fp8_weight_names(model)} if exporting else set()

    def exported(hf: dict[str, torch.Tensor]):
        return (export_tensors(hf, fp8_weights, recipe) if exporting else hf).items()

    for chunk in chunks:
        yield from exported({names.to_hf(name, cfg): t for name, t in chunk.items()})
    copies = names.mtp_shared_copies(cfg)
    if copies and (sources := gather(sorted({source for _, source in copies}))):
        yield from exported({hf_name: sources[source] for hf_name, source in copies})


def save_pretrained(model: nn.Module, path: str | os.PathLike,
                    state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """`state_dict` (our names) overrides the model's own, e.g. one consolidated from ZeRO-3 partitions."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors, keys = export_state(model, state_dict)
    config = model.config.to_hf_dict(dtype=keys.pop("dtype"))
    with open(path / "config.json", "w") as f:
        json.dump(dict(sorted({**config, **keys}.items())), f, indent=2)
    # Clone so shared storage (the MTP copies of embedding and head) is written as separate tensors.
    tensors = {k: t.detach().to("cpu").contiguous().clone() for k, t in tensors.items()}
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ValueError(f"No *.safetensors files in {path}; expected a Hugging Face checkpoint folder.")
    tensors = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    return tensors


def load_pretrained(cls: type[nn.Module], path: str | os.PathLike, fp8: bool | FP8Recipe,
                    dtype: torch.dtype) -> nn.Module:
    """`fp8`: True (or a recipe) swaps the eligible linears for FP8Linear after loading, whatever the file format."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} has no config.json; expected a Hugging Face DeepseekV3 checkpoint folder.")
    raw = json.loads((path / "config.json").read_text())
    quantized = raw.pop("quantization_config", None)
    cfg = DeepseekV3Config.from_dict(raw)
    tensors = _read_tensors(path)
    if quantized:
        check_quantization_config(quantized, str(path))
        tensors = dequantize_checkpoint(tensors, str(path))
    model = cls(cfg)
    ours = {name: tensors[hf_name] for name, hf_name in _our_names(tensors, cfg).items()}
    _check_tensors(path, cfg, {n: tuple(t.shape) for n, t in ours.items()},
                   {n: tuple(t.shape) for n, t in model.state_dict().items()})
    model.load_state_dict(ours, strict=False)
    model = model.to(dtype)
    if fp8:
        convert_to_fp8(model, fp8 if isinstance(fp8, FP8Recipe) else FP8Recipe())
    return model


def _our_names(hf_names: Iterable[str], cfg: DeepseekV3Config) -> dict[str, str]:
    """Our name -> the checkpoint's, for the tensors the model takes (rope frequencies are recomputed from the
    config; the MTP copies of embedding and head are the shared tensors again)."""
    ours = {}
    for hf_name in hf_names:
        name = None if hf_name.endswith("rotary_emb.inv_freq") else names.from_hf(hf_name, cfg)
        if name is not None:
            ours[name] = hf_name
    return ours


def _check_tensors(path: Path, cfg: DeepseekV3Config, found: dict[str, tuple], expected: dict[str, tuple]) -> None:
    """Refuse a checkpoint whose tensors (our names -> shapes) are not the ones the config implies."""
    unexpected = sorted(set(found) - set(expected))
    missing = sorted(set(expected) - set(found))
    missing_mtp = [n for n in missing if n.startswith("mtp.")]
    if unexpected or len(missing) > len(missing_mtp):
        raise ValueError(f"Checkpoint {path} does not match its config.json: unexpected tensors "
                         f"{[names.to_hf(n, cfg) for n in unexpected][:8]}, missing "
                         f"{[names.to_hf(n, cfg) for n in missing if n not in missing_mtp][:8]}.")
    if missing_mtp:
        # transformers' DeepseekV3ForCausalLM has no MTP modules, so its checkpoints lack them although its
        # config says num_nextn_predict_layers=1; the MTP modules then start from random init.
        log.warning("Checkpoint %s has no MTP weights for num_nextn_predict_layers=%d; MTP modules start from "
                    "random initialisation.", path, cfg.num_nextn_predict_layers)
    for name, shape in found.items():
        if shape != expected[name]:
            raise ValueError(f"Tensor {names.to_hf(name, cfg)} in {path} has shape {shape}; the config "
                             f"implies {expected[name]}.")


def load_pretrained_zero3(cls: type[nn.Module], path: str | os.PathLike, fp8: bool | FP8Recipe,
                          ds_config: dict) -> nn.Module:
    """``load_pretrained`` for a model that need not fit one rank (ZeRO-3): built under ``deepspeed.zero.Init``, so
    each parameter is partitioned over the ranks as it is created, then filled one module at a time. Rank 0 reads
    that module's tensors from the safetensors files (one tensor at a time, FP8 ones dequantised) into its gathered
    parameters, from which DeepSpeed re-partitions them (``GatheredParameters(modifier_rank=0)``); buffers are
    read on every rank. Parameters take the dtype ``ds_config`` gives zero.Init (bf16 in bf16 mode). A collective:
    every rank of the ZeRO group calls it."""
    import deepspeed
    import torch.distributed as dist

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} has no config.json; expected a Hugging Face DeepseekV3 checkpoint folder.")
    raw = json.loads((path / "config.json").read_text())
    quantized = raw.pop("quantization_config", None)
    if quantized:
        check_quantization_config(quantized, str(path))
    cfg = DeepseekV3Config.from_dict(raw)
    where, shapes = {}, {}  # checkpoint name -> its file, its shape (read from the headers, no tensor loaded)
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                where[key], shapes[key] = file, tuple(f.get_slice(key).get_shape())
    if not where:
        raise ValueError(f"No *.safetensors files in {path}; expected a Hugging Face checkpoint folder.")

    def read(hf_name: str) -> torch.Tensor:
        with safe_open(str(where[hf_name]), framework="pt") as f:
            tensor = f.get_tensor(hf_name)
        scale = hf_name[:-len("weight")] + SCALE_SUFFIX
        return dequantize_blocks(tensor, read(scale).float()) if quantized and scale in where else tensor

    with deepspeed.zero.Init(config_dict_or_path=ds_config):
        model = cls(cfg)
    ours = _our_names([k for k in where if not k.endswith("." + SCALE_SUFFIX)], cfg)
    expected = {n: tuple(getattr(t, "ds_shape", t.shape)) for n, t in model.state_dict(keep_vars=True).items()}
    _check_tensors(path, cfg, {n: shapes[h] for n, h in ours.items()}, expected)
    writer = dist.get_rank() == 0
    with torch.no_grad():
        for prefix, module in model.named_modules():
            params = [(n, p) for n, p in module.named_parameters(prefix=prefix, recurse=False) if n in ours]
            if params:
                with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=0):
                    if writer:
                        for name, p in params:
                            p.data.copy_(read(ours[name]))
            for name, buf in module.named_buffers(prefix=prefix, recurse=False):
                if name in ours:
                    buf.copy_(read(ours[name]))
    if fp8:
        convert_to_fp8(model, fp8 if isinstance(fp8, FP8Recipe) else FP8Recipe())
    return model

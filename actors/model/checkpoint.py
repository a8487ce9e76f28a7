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
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from . import names
from .config import DeepseekV3Config
from .fp8 import (FP8Recipe, check_quantization_config, convert_to_fp8, dequantize_checkpoint, export_tensors,
                  fp8_weight_names, quantization_config)

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
    ours = {}
    for hf_name, tensor in tensors.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed from the config
        name = names.from_hf(hf_name, cfg)
        if name is not None:
            ours[name] = tensor
    expected = model.state_dict()
    unexpected = sorted(set(ours) - set(expected))
    missing = sorted(set(expected) - set(ours))
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
    for name, tensor in ours.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"Tensor {names.to_hf(name, cfg)} in {path} has shape {tuple(tensor.shape)}; the config "
                             f"implies {tuple(expected[name].shape)}.")
    model.load_state_dict(ours, strict=False)
    model = model.to(dtype)
    if fp8:
        convert_to_fp8(model, fp8 if isinstance(fp8, FP8Recipe) else FP8Recipe())
    return model

"""Reading and writing Hugging Face DeepseekV3 checkpoint folders: config.json plus safetensors files.

Names go through names.py in both directions. Writing produces one `model.safetensors` with per-expert tensors,
the router bias in fp32 and the MTP layers as `model.layers.{num_hidden_layers + j}.*`, i.e. what transformers
5.x, DeepSeek's releases and vLLM read. Reading accepts any number of `*.safetensors` shards in the folder.
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

log = logging.getLogger(__name__)


def save_pretrained(model: nn.Module, path: str | os.PathLike,
                    state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """`state_dict` (our names) overrides the model's own, e.g. one consolidated from ZeRO-3 partitions."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg: DeepseekV3Config = model.config
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    with open(path / "config.json", "w") as f:
        json.dump(cfg.to_hf_dict(dtype=dtype), f, indent=2)
    # Clone so shared storage (the MTP copies of embedding and head) is written as separate tensors.
    tensors = {k: t.detach().to("cpu").contiguous().clone()
               for k, t in names.hf_state_dict(state_dict or model.state_dict(), cfg).items()}
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


def load_pretrained(cls: type[nn.Module], path: str | os.PathLike, fp8: bool, dtype: torch.dtype) -> nn.Module:
    if fp8:
        raise NotImplementedError("fp8=True is not implemented yet: the FP8 path (block-scaled E4M3 linears "
                                  "swapped in through a LinearFactory) comes with the FP8 work. Load with fp8=False.")
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} has no config.json; expected a Hugging Face DeepseekV3 checkpoint folder.")
    cfg = DeepseekV3Config.from_json_file(path / "config.json")
    model = cls(cfg)
    ours = {}
    for hf_name, tensor in _read_tensors(path).items():
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
    return model.to(dtype)

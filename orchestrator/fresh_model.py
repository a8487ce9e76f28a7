"""Fresh models (a model spec's ``init:``) → Hugging Face checkpoint directories.

A fresh architecture from a config is materialised once into the run directory (random weights + a locally
trained tokenizer), so every stage, actor and engine afterwards only ever deals with a checkpoint path. The
architectures' tiny defaults are in orchestrator/arch_defaults.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from orchestrator.arch_defaults import with_defaults
from orchestrator.config import InitSpec

log = logging.getLogger(__name__)

def model_config(init: InitSpec, tokenizer) -> dict:
    """The architecture config: tiny defaults, the spec's overrides, and the tokenizer's special ids."""
    cfg = with_defaults(init.arch, init.config)
    cfg.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return cfg


def _build_hf(arch: str, cfg: dict):
    import transformers

    config_cls = {"qwen2": transformers.Qwen2Config, "llama": transformers.LlamaConfig}[arch]
    model_cls = {"qwen2": transformers.Qwen2ForCausalLM, "llama": transformers.LlamaForCausalLM}[arch]
    return model_cls(config_cls(**cfg))


def _build_v3(cfg: dict):
    from actors.model import DeepseekV3Config, DeepseekV3ForCausalLM

    return DeepseekV3ForCausalLM(DeepseekV3Config.tiny(**cfg))


def materialize(name: str, init: InitSpec, texts: Iterable[str], out_dir: Path) -> Path:
    """Write a randomly initialised checkpoint with a fresh tokenizer to ``out_dir`` (once)."""
    import torch

    from orchestrator.data.tokenizer import build_bpe_tokenizer

    done = out_dir / ".complete"
    if done.exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_bpe_tokenizer(texts, init.tokenizer.vocab_size, out_dir)
    cfg = model_config(init, tokenizer)
    torch.manual_seed(init.seed)
    model = _build_v3(cfg) if init.arch == "deepseek_v3" else _build_hf(init.arch, cfg)
    model.save_pretrained(str(out_dir))
    params = sum(p.numel() for p in model.parameters())
    (out_dir / "init.json").write_text(json.dumps({"name": name, "arch": init.arch, "parameters": params}))
    done.touch()
    log.info("model %s: %s with %.2fM parameters, vocab %d → %s", name, init.arch, params / 1e6,
             len(tokenizer), out_dir)
    return out_dir

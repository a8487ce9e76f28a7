"""Model specs → Hugging Face checkpoint directories.

A model is either a path to an existing Hugging Face checkpoint or ``init:`` a fresh architecture from a
config. Fresh models are materialised once into the run directory (random weights + a locally trained
tokenizer), so every stage, actor and engine afterwards only ever deals with a checkpoint path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from orchestrator.config import InitSpec

log = logging.getLogger(__name__)

# Tiny defaults per architecture; a spec's `config:` overrides any key. Sizes suit a CPU test run. Embeddings
# are untied so rollout workers can swap weights in place (see actors/rollout.py).
_ARCH_DEFAULTS: dict[str, dict] = {
    "qwen2": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0,
                  tie_word_embeddings=False, rms_norm_eps=1e-6),
    "llama": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0,
                  tie_word_embeddings=False, rms_norm_eps=1e-6),
    # DeepseekV3Config.tiny() supplies the rest: a CPU-sized config with every V3 feature on.
    "deepseek_v3": {},
}


# The head sizes vLLM's CPU attention has kernels for (vllm/v1/attention/backends/cpu_attn.py; a unit test in
# tests/unit/test_config.py compares this with the installed vLLM). The GPU backends take those up to 256 too.
# A fresh model with any other head size trains, then fails when its first rollout starts (for an SFT stage,
# its first dev evaluation, minutes in), so the YAML is refused when it is loaded instead.
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def _with_defaults(arch: str, config: dict) -> dict:
    return {**_ARCH_DEFAULTS[arch], **config}


def check_dense_config(arch: str, config: dict) -> None:
    """Raise ValueError when a fresh qwen2/llama config cannot be built or served by vLLM on CPU."""
    if arch not in ("qwen2", "llama"):
        return   # our V3's MLA shapes are its own config's business (DeepseekV3Config validates them)
    cfg = _with_defaults(arch, config)
    hidden, heads, kv_heads = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    if heads % kv_heads:
        raise ValueError(f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})")
    if cfg.get("head_dim") is None and hidden % heads:
        raise ValueError(f"hidden_size ({hidden}) must be a multiple of num_attention_heads ({heads})")
    head_dim = cfg.get("head_dim") or hidden // heads
    if head_dim not in VLLM_CPU_HEAD_SIZES:
        raise ValueError(f"head size {head_dim} (hidden_size {hidden} / num_attention_heads {heads}) has no vLLM "
                         f"CPU attention kernel; choose hidden_size and num_attention_heads so it is one of "
                         f"{list(VLLM_CPU_HEAD_SIZES)}")


def model_config(init: InitSpec, tokenizer) -> dict:
    """The architecture config: tiny defaults, the spec's overrides, and the tokenizer's special ids."""
    cfg = _with_defaults(init.arch, init.config)
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

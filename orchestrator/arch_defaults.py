"""The tiny defaults of the fresh architectures a pipeline can ``init:``, and the check that vLLM can serve them.

No project imports: the schema (orchestrator/config.py) validates a fresh model with ``check_dense_config`` and
orchestrator/fresh_model.py builds it from ``with_defaults``, so both read one table.
"""

from __future__ import annotations

# Tiny defaults per architecture; a spec's `config:` overrides any key. Sizes suit a CPU test run. Embeddings
# are untied (as in DeepSeek-V3); `tie_word_embeddings: true` gives the Qwen2.5/Qwen3 layout, which syncs in place
# as well (actors/weight_sync.py).
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


# The head sizes vLLM 0.32's CPU attention has kernels for (vllm/v1/attention/backends/cpu_attn.py; a unit test in
# tests/unit/test_config.py compares this with the installed vLLM). The GPU backends take those up to 256 too.
# A fresh model with any other head size trains, then fails when its first rollout starts (for an SFT stage,
# its first dev evaluation, minutes in), so the YAML is refused when it is loaded instead.
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def with_defaults(arch: str, config: dict) -> dict:
    return {**_ARCH_DEFAULTS[arch], **config}


def check_dense_config(arch: str, config: dict) -> None:
    """Raise ValueError when a fresh qwen2/llama config cannot be built or served by vLLM on CPU."""
    if arch not in ("qwen2", "llama"):
        return   # our V3's MLA shapes are its own config's business (DeepseekV3Config validates them)
    cfg = with_defaults(arch, config)
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

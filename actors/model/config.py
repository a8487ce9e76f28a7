"""DeepSeek-V3 configuration, keyed exactly as Hugging Face's `DeepseekV3Config` names it.

One dataclass holds the architecture read from and written to `config.json`, plus the training coefficients
DeepSeek-V3 defines beside it: `aux_loss_alpha` (the sequence-wise balance loss, off at 0) and `mtp_loss_weight`
(λ of the multi-token-prediction loss). Both extra keys ride along in config.json; transformers and vLLM ignore them.

RoPE settings live in `rope_parameters` (transformers 5 layout: `rope_type`, `rope_theta` and, for YaRN, `factor`,
`original_max_position_embeddings`, `beta_fast`, `beta_slow`, `mscale`, `mscale_all_dim`). DeepSeek's own
config.json layout (`rope_theta` + `rope_scaling`) is accepted on read and written back in the transformers layout.

Only the variant vLLM serves the same way is accepted: sigmoid scoring with the `noaux_tc` bias, interleaved rope,
no attention bias, untied embeddings. Anything else is rejected with a ValueError rather than silently diverging
from the rollout engine.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

# Keys transformers writes that are derived or irrelevant here; read and dropped, regenerated on write.
_DERIVED_KEYS = {
    "model_type", "architectures", "transformers_version", "head_dim", "qk_head_dim", "use_cache",
    "output_router_logits", "pretraining_tp", "torch_dtype", "dtype", "num_mtp_layers", "rope_theta",
    "rope_scaling", "rope_parameters", "auto_map",
}
_YARN_KEYS = {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"}


@dataclass
class DeepseekV3Config:
    """Architecture and loss coefficients of a DeepSeek-V3 model (field names = Hugging Face config keys)."""

    vocab_size: int = 129280
    hidden_size: int = 7168
    intermediate_size: int = 18432
    moe_intermediate_size: int = 2048
    num_hidden_layers: int = 61
    num_attention_heads: int = 128
    num_key_value_heads: int | None = None
    n_shared_experts: int = 1
    n_routed_experts: int = 256
    routed_scaling_factor: float = 2.5
    kv_lora_rank: int = 512
    q_lora_rank: int | None = 1536
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    qk_nope_head_dim: int = 128
    n_group: int = 8
    topk_group: int = 4
    num_experts_per_tok: int = 8
    first_k_dense_replace: int = 3
    norm_topk_prob: bool = True
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    rope_parameters: dict[str, Any] = field(default_factory=lambda: {"rope_type": "default", "rope_theta": 10000.0})
    rope_interleave: bool = True
    attention_bias: bool = False
    attention_dropout: float = 0.0
    tie_word_embeddings: bool = False
    num_nextn_predict_layers: int = 1
    topk_method: str = "noaux_tc"
    scoring_func: str = "sigmoid"
    moe_layer_freq: int = 1
    aux_loss_alpha: float = 0.0
    seq_aux: bool = True
    mtp_loss_weight: float = 0.3
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 1
    pad_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Unknown config.json keys, kept so a load/save round trip does not drop them."""

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self.rope_parameters = _normalise_rope(dict(self.rope_parameters), self.max_position_embeddings)
        self._validate()

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_hidden_layers))

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Layers from `first_k_dense_replace` on are MoE; MTP blocks (index >= num_hidden_layers) alike."""
        return self.n_routed_experts > 0 and layer_idx >= self.first_k_dense_replace

    def _validate(self) -> None:
        checks = [
            (self.topk_method == "noaux_tc", f"topk_method is {self.topk_method!r}; only 'noaux_tc' (sigmoid scores "
             "plus e_score_correction_bias for selection) is implemented, and vLLM needs it to attach the bias"),
            (self.scoring_func == "sigmoid",
             f"scoring_func is {self.scoring_func!r}; DeepSeek-V3 routing needs 'sigmoid'"),
            (self.hidden_act == "silu",
             f"hidden_act is {self.hidden_act!r}; only 'silu' is supported (as in vLLM)"),
            (self.rope_interleave,
             "rope_interleave is false; DeepSeek checkpoints and vLLM use the interleaved layout"),
            (not self.attention_bias,
             "attention_bias is true; DeepSeek-V3 projections have no bias and vLLM loads none"),
            (not self.tie_word_embeddings,
             "tie_word_embeddings is true; DeepSeek-V3 keeps embed_tokens and lm_head apart"),
            (self.attention_dropout == 0.0, "attention_dropout must be 0; the model has no dropout"),
            (self.moe_layer_freq == 1, f"moe_layer_freq is {self.moe_layer_freq}; only 1 (every layer after the dense "
             "ones is MoE) is supported"),
            (self.num_key_value_heads == self.num_attention_heads,
             "num_key_value_heads must equal num_attention_heads: MLA has one latent shared by all heads, "
             "not grouped key/value heads"),
            (self.aux_loss_alpha == 0.0 or self.seq_aux, "aux_loss_alpha > 0 with seq_aux false asks for a batch-wise "
             "balance loss; only the sequence-wise one (seq_aux true) is implemented"),
            (self.num_nextn_predict_layers >= 0, "num_nextn_predict_layers must be 0 or more"),
            (0 <= self.first_k_dense_replace <= self.num_hidden_layers, "first_k_dense_replace must lie in "
             f"[0, num_hidden_layers={self.num_hidden_layers}]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"DeepSeek-V3 config: {message}.")
        if self.n_routed_experts > 0:
            self._validate_routing()

    def _validate_routing(self) -> None:
        E, G = self.n_routed_experts, self.n_group
        if G < 1 or E % G != 0:
            raise ValueError(f"DeepSeek-V3 config: n_routed_experts={E} must be a multiple of n_group={G}.")
        if G > 1 and E // G < 2:
            raise ValueError(f"DeepSeek-V3 config: each of the n_group={G} groups needs at least 2 experts, because a "
                             "group's score is the sum of its top-2 expert scores; lower n_group.")
        if not 1 <= self.topk_group <= G:
            raise ValueError(f"DeepSeek-V3 config: topk_group={self.topk_group} must lie in [1, n_group={G}].")
        if not 1 <= self.num_experts_per_tok <= self.topk_group * (E // G):
            raise ValueError(f"DeepSeek-V3 config: num_experts_per_tok={self.num_experts_per_tok} must lie in "
                             f"[1, topk_group * experts per group = {self.topk_group * (E // G)}].")

    @classmethod
    def tiny(cls, **overrides: Any) -> "DeepseekV3Config":
        """A CPU-sized config with every feature on: q-LoRA MLA, YaRN, shared + group-limited routed experts, MTP.

        Sized for vLLM's CPU kernels: qk head dim 32 is in its attention's supported list, and the expert width is
        a multiple of its MoE alignment (32), so vLLM does not pad experts (padded experts break in-place reloads).
        """
        base = dict(
            vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=32, num_hidden_layers=3,
            num_attention_heads=4, n_shared_experts=1, n_routed_experts=8, routed_scaling_factor=2.5,
            kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=24, v_head_dim=16, n_group=4,
            topk_group=2, num_experts_per_tok=3, first_k_dense_replace=1, max_position_embeddings=256,
            initializer_range=0.1, num_nextn_predict_layers=1,
            rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                             "original_max_position_embeddings": 64, "beta_fast": 32, "beta_slow": 1,
                             "mscale": 1.0, "mscale_all_dim": 0.8},
        )
        return cls.from_dict({**base, **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DeepseekV3Config":
        """Build from a config.json dict (transformers 5 or DeepSeek's original layout) or from plain kwargs."""
        data = dict(data)
        model_type = data.get("model_type", "deepseek_v3")
        if model_type != "deepseek_v3":
            raise ValueError(f"config model_type is {model_type!r}; this class reads 'deepseek_v3' configs only.")
        if data.get("quantization_config"):
            raise ValueError("This config describes a quantized (FP8) checkpoint; load the folder with "
                             "DeepseekV3ForCausalLM.from_pretrained, which dequantises its weights.")
        rope = _rope_from_dict(data)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "rope_parameters"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k not in _DERIVED_KEYS and k != "extra"}
        extra.update(data.get("extra", {}))
        return cls(**known, rope_parameters=rope, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "DeepseekV3Config":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_hf_dict(self, dtype: str | None = None) -> dict[str, Any]:
        """The config.json content: transformers' key names, plus what vLLM needs to route like we do."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(self.extra)
        out.update({
            "model_type": "deepseek_v3",
            "architectures": ["DeepseekV3ForCausalLM"],
            "rope_parameters": dict(self.rope_parameters),
            # transformers derives these two; written as it writes them so its own save and ours look alike.
            "head_dim": self.qk_rope_head_dim,
            "qk_head_dim": self.qk_head_dim,
        })
        if dtype is not None:
            out["dtype"] = dtype
        return dict(sorted(out.items()))


def _rope_from_dict(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("rope_parameters"):
        rope = dict(data["rope_parameters"])
    else:  # DeepSeek's own layout: rope_theta at top level, YaRN settings in rope_scaling
        rope = dict(data.get("rope_scaling") or {})
    if "type" in rope:
        rope.setdefault("rope_type", rope.pop("type"))
    rope.setdefault("rope_type", "default")
    rope.setdefault("rope_theta", data.get("rope_theta", 10000.0))
    return rope


def _normalise_rope(rope: dict[str, Any], max_position_embeddings: int) -> dict[str, Any]:
    kind = rope.get("rope_type", rope.pop("type", "default"))
    rope["rope_type"] = kind
    if kind == "default":
        unknown = set(rope) - {"rope_type", "rope_theta"}
    elif kind == "yarn":
        if "factor" not in rope:
            raise ValueError("DeepSeek-V3 config: rope_parameters has rope_type 'yarn' but no 'factor'.")
        rope.setdefault("original_max_position_embeddings", max_position_embeddings)
        unknown = set(rope) - _YARN_KEYS - {"rope_type", "rope_theta", "truncate"}
        if rope.get("truncate", True) is not True:
            raise ValueError("DeepSeek-V3 config: rope_parameters.truncate=false is not supported; DeepSeek and vLLM "
                             "round the YaRN correction range to whole dimensions.")
    else:
        raise ValueError(f"DeepSeek-V3 config: rope_type {kind!r} is not supported; use 'default' or 'yarn'.")
    if unknown:
        # attention_factor in particular: transformers honours it, vLLM switches to a different rope class for it.
        raise ValueError(f"DeepSeek-V3 config: rope_parameters keys {sorted(unknown)} are not supported for "
                         f"rope_type {kind!r}.")
    rope.setdefault("rope_theta", 10000.0)
    return rope

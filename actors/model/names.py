"""The one name map between our parameters, Hugging Face DeepseekV3 checkpoints and vLLM's DeepseekV3 model.

L = num_hidden_layers, i < L a main layer, j >= 0 an MTP module (depth j + 1), e a routed expert.

ours (state_dict)                     Hugging Face (on disk)                      vLLM parameter [shard]
model.embed_tokens                    =                                           =
model.layers.i.<block>                =                                           =, except these fused ones:
  .self_attn.q_a_proj                 =                                           .self_attn.fused_qkv_a_proj [0] (*)
  .self_attn.kv_a_proj_with_mqa       =                                           .self_attn.fused_qkv_a_proj [1] (*)
  .mlp.{gate,up}_proj (dense layers)  =                                           .mlp.gate_up_proj [0 / 1]
  .mlp.shared_experts.{gate,up}_proj  =                                           .mlp.shared_experts.gate_up_proj
                                                                                  [0 / 1]
  .mlp.experts.e.{gate,up}_proj       = (one tensor per expert)                   .mlp.experts.routed_experts.w13_weight
                                                                                  [e, w1 / w3]
  .mlp.experts.e.down_proj            =                                           .mlp.experts.routed_experts.w2_weight
                                                                                  [e, w2]
  .mlp.gate, .mlp.gate.e_score_correction_bias   =                                =
model.norm, lm_head                   =                                           =
mtp.j.{enorm,hnorm,eh_proj}           model.layers.{L+j}.{enorm,hnorm,eh_proj}    = (vLLM's MTP draft model)
mtp.j.norm                            model.layers.{L+j}.shared_head.norm         = (draft model)
mtp.j.block.<block>                   model.layers.{L+j}.<block>                  model.layers.{L+j}.mtp_block.<block>
(model.embed_tokens, shared)          model.layers.{L+j}.embed_tokens (copy)      draft model's model.embed_tokens
(lm_head, shared)                     model.layers.{L+j}.shared_head.head (copy)  = (draft model)

Every name ends in `.weight` except the router bias (a buffer). "=" means the same name as the column before.
* only when vLLM runs its MLA backend; with VLLM_MLA_DISABLE=1 the two projections keep their own names.
vLLM's `load_weights` takes the Hugging Face names and does the fusing itself, so weight sync sends HF names;
the vLLM column says where each tensor lands (useful when checking a sync). MTP tensors are skipped by vLLM's
main model and read only by its MTP draft model (speculative decoding).
The MTP copies of the embedding and head are written because DeepSeek's checkpoints carry them; on read they
are skipped, since the model shares the main embedding and head.
"""

from __future__ import annotations

import re

import torch

from .config import DeepseekV3Config

_MTP_OURS = re.compile(r"^mtp\.(\d+)\.(.+)$")
_LAYER_HF = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_MTP_OWN = ("enorm.", "hnorm.", "eh_proj.")
_MTP_SHARED_COPIES = {"embed_tokens.weight": "model.embed_tokens.weight", "shared_head.head.weight": "lm_head.weight"}
_EXPERT = re.compile(r"^(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_GATE_UP = re.compile(r"^(.*\.mlp(?:\.shared_experts)?)\.(gate_proj|up_proj)\.weight$")
_QKV_A = re.compile(r"^(.*\.self_attn)\.(q_a_proj|kv_a_proj_with_mqa)\.weight$")


def to_hf(name: str, cfg: DeepseekV3Config) -> str:
    """Our parameter/buffer name -> its Hugging Face checkpoint name."""
    m = _MTP_OURS.match(name)
    if not m:
        return name
    layer, rest = cfg.num_hidden_layers + int(m.group(1)), m.group(2)
    if rest == "norm.weight":
        return f"model.layers.{layer}.shared_head.norm.weight"
    if rest.startswith("block."):
        return f"model.layers.{layer}.{rest[len('block.'):]}"
    if rest.startswith(_MTP_OWN):
        return f"model.layers.{layer}.{rest}"
    raise ValueError(f"No Hugging Face name is defined for the MTP tensor {name!r}.")


def from_hf(name: str, cfg: DeepseekV3Config) -> str | None:
    """Hugging Face checkpoint name -> ours; None for the MTP copies of the shared embedding and head."""
    m = _LAYER_HF.match(name)
    if not m or int(m.group(1)) < cfg.num_hidden_layers:
        return name
    j, rest = int(m.group(1)) - cfg.num_hidden_layers, m.group(2)
    if rest in _MTP_SHARED_COPIES:
        return None
    if rest == "shared_head.norm.weight":
        return f"mtp.{j}.norm.weight"
    if rest.startswith(_MTP_OWN):
        return f"mtp.{j}.{rest}"
    return f"mtp.{j}.block.{rest}"


def hf_state_dict(state_dict: dict[str, torch.Tensor], cfg: DeepseekV3Config) -> dict[str, torch.Tensor]:
    """Our state dict renamed for disk, plus the MTP layers' copies of the shared embedding and head."""
    out = {to_hf(name, cfg): t for name, t in state_dict.items()}
    for hf_name, source in mtp_shared_copies(cfg):
        out[hf_name] = state_dict[source]
    return out


def mtp_shared_copies(cfg: DeepseekV3Config) -> list[tuple[str, str]]:
    """(Hugging Face name, our source name) of each MTP layer's copy of the shared embedding and head, in the
    order ``hf_state_dict`` appends them after the model's own tensors."""
    return [(f"model.layers.{cfg.num_hidden_layers + j}.{rest}", source)
            for j in range(cfg.num_nextn_predict_layers) for rest, source in _MTP_SHARED_COPIES.items()]


def to_vllm(hf_name: str, cfg: DeepseekV3Config,
            fused_qkv_a: bool = False) -> tuple[str, int | tuple[int, str] | None]:
    """Hugging Face name -> (vLLM parameter it is loaded into, shard), for the main model's tensors.

    The shard is None (whole tensor), 0/1 (half of a fused projection) or (expert, "w1"|"w3"|"w2").

    MTP tensors (layers >= L) belong to vLLM's separate draft model and are not mapped here.
    """
    m = _LAYER_HF.match(hf_name)
    if m and int(m.group(1)) >= cfg.num_hidden_layers:
        raise ValueError(f"{hf_name!r} is an MTP tensor; vLLM's main model skips it (its MTP draft model loads it).")
    if m := _EXPERT.match(hf_name):
        param, shard = {"gate_proj": ("w13_weight", "w1"), "up_proj": ("w13_weight", "w3"),
                        "down_proj": ("w2_weight", "w2")}[m.group(3)]
        return f"{m.group(1)}.routed_experts.{param}", (int(m.group(2)), shard)
    if m := _GATE_UP.match(hf_name):
        return f"{m.group(1)}.gate_up_proj.weight", 0 if m.group(2) == "gate_proj" else 1
    if fused_qkv_a and cfg.q_lora_rank is not None and (m := _QKV_A.match(hf_name)):
        return f"{m.group(1)}.fused_qkv_a_proj.weight", 0 if m.group(2) == "q_a_proj" else 1
    return hf_name, None

"""DeepSeek-V3 causal language model: embedding, MLA + MoE blocks, final norm, output head, MTP modules.

Shapes: B batch, T tokens, S key tokens, D model dim, V vocab, L MoE layers, E routed experts.

Forward (training and scoring):  logits = Head(RMSNorm(blocks(Emb(ids))))  [B, T, V].
With labels [B, T] (aligned with input_ids; position i's logits predict labels[:, i + 1]; -100 ignored):
    loss = CE_main + mtp_loss_weight * mean_k CE_mtp_k   (MTP only in training mode, when modules exist)
           + sum over MoE layers of the sequence-wise balance loss   (only when aux_loss_alpha > 0)
Padding: `attention_mask` [B, T] (1 = real token) masks padded keys and padded labels; batches are expected
right-padded (positions 0..T-1); for left padding pass `position_ids` as well.

A plain nn.Module: DeepSpeed ZeRO 1-3 wraps it as is. Checkpoints are Hugging Face DeepseekV3 folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .block import DecoderLayer, run_block
from .checkpoint import load_pretrained, save_pretrained
from .config import DeepseekV3Config
from .fp8 import FP8Recipe
from .generation import greedy_generate
from .layers import LinearFactory, RMSNorm
from .mla import LatentCache, attention_mask_for
from .moe import MoEStats
from .mtp import IGNORE_INDEX, MTPModule, mtp_loss, next_token_loss
from .rope import RotaryEmbedding


@dataclass
class CausalLMOutput:
    logits: torch.Tensor
    """[B, T, V]"""
    loss: torch.Tensor | None = None
    """Scalar training loss: main + weighted MTP + balance terms (None without labels)."""
    lm_loss: torch.Tensor | None = None
    mtp_loss: torch.Tensor | None = None
    """Unweighted mean MTP cross-entropy over depths (None unless computed)."""
    aux_loss: torch.Tensor | None = None
    """Sum of the sequence-wise balance losses, already scaled by aux_loss_alpha (None when off)."""
    expert_load: torch.Tensor | None = None
    """[L, E] tokens per expert in each main-model MoE layer for this call (detached)."""


class DeepseekV3Model(nn.Module):
    """The backbone (`model.*` on disk): ids [B, T] -> final normalised hidden states [B, T, D]."""

    def __init__(self, cfg: DeepseekV3Config, linear: LinearFactory) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        nn.init.normal_(self.embed_tokens.weight, std=cfg.initializer_range)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, linear) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.qk_rope_head_dim, cfg.rope_parameters)
        self.gradient_checkpointing = False

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor | None,
                token_mask: torch.Tensor | None, caches: list[LatentCache] | None = None,
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], list[MoEStats]]:
        """Returns hidden [B, T, D], the rope (cos, sin) used, and the MoE layers' stats in layer order."""
        h = self.embed_tokens(input_ids)
        rope = self.rotary_emb(position_ids)
        stats = []
        for i, layer in enumerate(self.layers):
            h, s = run_block(layer, h, *rope, mask, token_mask, checkpointing=self.gradient_checkpointing,
                             cache=None if caches is None else caches[i])
            if s is not None:
                stats.append(s)
        return self.norm(h), rope, stats


class DeepseekV3ForCausalLM(nn.Module):
    def __init__(self, config: DeepseekV3Config | dict[str, Any], linear: LinearFactory | None = None) -> None:
        super().__init__()
        self.config = config if isinstance(config, DeepseekV3Config) else DeepseekV3Config.from_dict(config)
        linear = linear or LinearFactory(self.config.initializer_range)
        self.fp8_recipe: FP8Recipe | None = getattr(linear, "recipe", None)
        """Set when the FP8-eligible projections are FP8Linear (see fp8.py); None for a high-precision model."""
        self.model = DeepseekV3Model(self.config, linear)
        self.lm_head = linear(self.config.hidden_size, self.config.vocab_size, fp8_eligible=False)
        self.mtp = nn.ModuleList(
            MTPModule(self.config, k, linear) for k in range(1, self.config.num_nextn_predict_layers + 1))

    def gradient_checkpointing_enable(self) -> None:
        self.model.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.model.gradient_checkpointing = False

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> CausalLMOutput:
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        token_mask = mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            token_mask = attention_mask.bool()
            mask = attention_mask_for(torch.arange(T, device=input_ids.device), token_mask)
        hidden, rope, stats = self.model(input_ids, position_ids, mask, token_mask)
        out = CausalLMOutput(logits=self.lm_head(hidden),
                             expert_load=torch.stack([s.load for s in stats]) if stats else None)
        if labels is None:
            return out
        if token_mask is not None:
            labels = labels.masked_fill(~token_mask, IGNORE_INDEX)
        out.lm_loss = out.loss = next_token_loss(out.logits, labels)
        weight = self.config.mtp_loss_weight
        if self.training and len(self.mtp) and weight > 0:
            out.mtp_loss, mtp_stats = mtp_loss(self.mtp, hidden, input_ids, labels, self.model.embed_tokens,
                                               self.lm_head, rope, mask, token_mask, self.model.gradient_checkpointing)
            out.loss = out.loss + weight * out.mtp_loss
            stats = stats + mtp_stats
        aux = [s.aux_loss for s in stats if s.aux_loss is not None]
        if aux:
            out.aux_loss = torch.stack(aux).sum()
            out.loss = out.loss + out.aux_loss
        return out

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], max_new_tokens: int, eos_token_id: int | None = None,
                 return_logits: bool = False):
        """Greedy decoding through the absorbed, latent-cached attention path (see generation.py)."""
        return greedy_generate(self, prompts, max_new_tokens, eos_token_id, return_logits)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, fp8: bool | FP8Recipe = False,
                        dtype: torch.dtype = torch.float32) -> "DeepseekV3ForCausalLM":
        """Loads a Hugging Face DeepseekV3 checkpoint folder (config.json + *.safetensors; FP8 ones are dequantised).

        `fp8=True` (or an FP8Recipe) runs the attention and MLP/expert projections with DeepSeek-V3's block-wise
        FP8 recipe; the weights loaded stay the `dtype` master copy.
        """
        return load_pretrained(cls, path, fp8=fp8, dtype=dtype)

    def save_pretrained(self, path: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Writes config.json and model.safetensors in the Hugging Face DeepseekV3 layout (served by vLLM as is).

        Under ZeRO-3 the module's own parameters are partitions: pass the consolidated `state_dict` (our names,
        e.g. DeepSpeed's `_zero3_consolidated_16bit_state_dict()`) from rank 0.
        """
        save_pretrained(self, path, state_dict)

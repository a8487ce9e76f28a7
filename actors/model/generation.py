"""Greedy generation for evaluation inside the trainer, through MLA's absorbed path and a latent-only cache.

Shapes: B prompts, P longest prompt, S_max = P + new tokens (cache slots), V vocab.

Prompts of different lengths are left-padded into one [B, P] batch; each sequence's positions count only its
real tokens, and padded cache slots are masked out as keys. The prompt is prefilled in one chunk, then one token
per step; each layer's cache keeps only the normalised kv latent and the rotated rope key (see mla.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .mla import LatentCache, attention_mask_for


def _left_pad(prompts: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ids [B, P] (left-padded with 0) and real-token flags [B, P]."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("greedy_generate needs a non-empty list of prompts, each with at least one token.")
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long, device=device)
    real = torch.zeros(len(prompts), width, dtype=torch.bool, device=device)
    for b, prompt in enumerate(prompts):
        ids[b, width - len(prompt):] = torch.tensor(prompt, device=device)
        real[b, width - len(prompt):] = True
    return ids, real


def _step(model: nn.Module, ids: torch.Tensor, positions: torch.Tensor, key_valid: torch.Tensor,
          caches: list[LatentCache]) -> torch.Tensor:
    """Runs ids [B, T] through the cached path; returns the logits of the last position [B, V]."""
    start = caches[0].length
    slots = torch.arange(start, start + ids.shape[1], device=ids.device)
    mask = attention_mask_for(slots, key_valid[:, :start + ids.shape[1]])
    hidden, _, _ = model.model(ids, positions, mask, None, caches)
    return model.lm_head(hidden[:, -1])


@torch.no_grad()
def greedy_generate(model: nn.Module, prompts: list[list[int]], max_new_tokens: int, eos_token_id: int | None = None,
                    return_logits: bool = False):
    """Greedy continuation of each prompt, up to max_new_tokens or through eos_token_id (kept).

    Returns a list of token lists; with return_logits, also a list of [n_b, V] tensors, the logits that chose
    each generated token (for checking the cached path against a full forward).
    Under DeepSpeed ZeRO-3 every rank must make the same module calls: give all ranks the same number of prompts
    and eos_token_id=None (a fixed step count), since stopping early on one rank alone would stall the others.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1; got {max_new_tokens}.")
    was_training = model.training
    model.eval()
    try:
        return _generate(model, prompts, max_new_tokens, eos_token_id, return_logits)
    finally:
        model.train(was_training)


def _generate(model: nn.Module, prompts: list[list[int]], max_new_tokens: int, eos_token_id: int | None,
              return_logits: bool):
    cfg, param = model.config, next(model.parameters())
    ids, real = _left_pad(prompts, param.device)
    B, P = ids.shape
    key_valid = torch.cat([real, torch.ones(B, max_new_tokens, dtype=torch.bool, device=ids.device)], dim=1)
    caches = [LatentCache.empty(B, P + max_new_tokens, cfg, param) for _ in model.model.layers]
    positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)
    logits = _step(model, ids, positions, key_valid, caches)
    next_pos = positions[:, -1:] + 1
    tokens, steps = [], []
    finished = torch.zeros(B, dtype=torch.bool, device=ids.device)
    for i in range(max_new_tokens):
        token = logits.argmax(dim=-1)
        tokens.append(token)
        if return_logits:
            steps.append(logits.float())
        if eos_token_id is not None:
            finished |= token == eos_token_id
        if bool(finished.all()) or i == max_new_tokens - 1:
            break
        logits = _step(model, token[:, None], next_pos, key_valid, caches)
        next_pos = next_pos + 1
    results, lengths = [], []
    for seq in torch.stack(tokens, dim=1).tolist():
        lengths.append(seq.index(eos_token_id) + 1 if eos_token_id in seq else len(seq))
        results.append(seq[:lengths[-1]])
    if not return_logits:
        return results
    stacked = torch.stack(steps, dim=1)
    return results, [stacked[b, :n] for b, n in enumerate(lengths)]

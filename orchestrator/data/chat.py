"""Conversations → token ids: prompts for generation and SFT examples with an assistant-only loss mask.

Rendering goes through the tokenizer's own chat template (the one vLLM also uses), so a prompt the trainer
sees is token for token the prompt the rollout engine saw. The loss mask is derived from character spans of
assistant turns and the tokenizer's offset mapping, which works for any fast Hugging Face tokenizer rather
than assuming how a particular template splits turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Message = dict[str, str]


def to_messages(row: dict, system: str | None = None) -> list[Message]:
    """A dataset row in either supported shape → a list of chat messages.

    Shapes: ``{"messages": [{"role", "content"}, ...]}`` or ``{"prompt": str, "response": str?}``.
    """
    if "messages" in row:
        messages = list(row["messages"])
    elif "prompt" in row:
        messages = [{"role": "user", "content": row["prompt"]}]
        if row.get("response") is not None:
            messages.append({"role": "assistant", "content": row["response"]})
    else:
        raise ValueError(f"Row {row.get('id', '?')!r} has neither 'messages' nor 'prompt'; "
                         f"found keys {sorted(row)}.")
    system = system or row.get("system")
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages


def prompt_messages(row: dict, system: str | None = None) -> list[Message]:
    """The conversation up to (not including) the final assistant turn: what a policy is asked to continue."""
    messages = to_messages(row, system)
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    return messages


def encode_prompt(tokenizer, row: dict, system: str | None = None) -> list[int]:
    text = tokenizer.apply_chat_template(prompt_messages(row, system), tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass(slots=True)
class SFTExample:
    input_ids: list[int]
    """[L] prompt and response tokens."""
    loss_mask: list[int]
    """[L] 1 on assistant tokens (the ones trained), 0 elsewhere."""


def encode_sft(tokenizer, row: dict, max_len: int, system: str | None = None) -> SFTExample | None:
    """Tokenise a conversation; returns None if it is longer than ``max_len`` (truncating would teach the
    model to stop mid-answer) or has no assistant turn."""
    messages = to_messages(row, system)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        # Everything the template adds before this turn's content (role header included) is prompt; the
        # content and whatever closes the turn (the end-of-turn token) is trained.
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        spans.append((len(before), len(through)))
    if not spans:
        return None
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    if len(ids) > max_len:
        return None
    mask = [int(any(lo <= start < hi for lo, hi in spans)) for start, _ in enc["offset_mapping"]]
    return SFTExample(ids, mask)


def pad_batch(examples: Sequence[SFTExample], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Right-pad to the longest example; padding is never trained."""
    width = max(len(e.input_ids) for e in examples)
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in examples]
    mask = [e.loss_mask + [0] * (width - len(e.loss_mask)) for e in examples]
    return ids, mask

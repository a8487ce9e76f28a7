"""`reward_model`: a Hugging Face sequence classifier's score of (prompt, completion), in batches.

R1 scores general data (helpfulness, harmlessness) with a reward model where no rule can judge. This plugin
loads `AutoModelForSequenceClassification` from a local `path` (one output, `num_labels` 1, as
Skywork-Reward, ArmoRM's scalar head or any Bradley-Terry RM trained with TRL or OpenRLHF) and maps its logit
to a score: `sigmoid((logit - shift) / scale)` by default, or the affine value itself with `mapping: raw`.

Where it runs. Per-sample rewards run in the RewardWorker's pool of processes (rewards/isolation/pool.py), one copy
per process and one sample at a time; a model there would be loaded `num_procs` times and never batched.
This class sets `in_host = True`, so the pool builds it once in the RewardWorker's own process (a Ray actor,
holding whatever `cluster.reward` reserved: with `gpus: 1` Ray gives it the GPU, and `device: auto` uses
it) and hands it every applicable sample of a batch through `batch()`, as it does for `http` rewards. Pool
processes never import it. No extra Ray actor is needed: the RewardWorker already is one, and a reward
built inside a pool process could not create actors (it is not a Ray worker). The pool's deadline covers it: it
runs in a thread beside the pool's processes, a batch not scored by the deadline times out, and `batch` starts no
chunk after the deadline the pool passes it (a forward pass itself has no hostile input to hang on: lengths are
capped), so a late call ends within one chunk.

Input. By default (`judge: answer`) the model sees only the answer, what `math` reads as the answer region
(the text after `</think>`, narrowed to the last `<answer>` block), as R1 judged helpfulness on the final
summary; `judge: completion` passes the whole completion, reasoning included (R1's harmlessness check).
The conversation is the sample's `prompt` (a string or chat messages) or `messages` (up to the last user
turn), `system` if given, then the response as the assistant turn, rendered with the tokenizer's chat
template when it has one (plain text joined by blank lines otherwise). Sequences longer than `max_length`
tokens lose their start (the first token kept when it is BOS), since the classifier reads the last token.

Failures become zero scores with a reason: no answer (`no_answer`), a forward pass that raised, out of
memory included (`reward_error`, for that chunk only), a non-finite logit (`invalid_score`). Configuration
problems (no checkpoint at `path`, `num_labels` other than 1, unknown options) raise ValueError when the
reward is built, so a RewardWorker fails at start with the sentence, not at the first batch.

A real reward model on a GPU, for example an 8B Llama-based classifier such as Skywork-Reward-Llama-3.1-8B
downloaded to a local directory:

    cluster: {reward: {workers: 1, cpus: 2, gpus: 1}}
    rewards:
      - {name: reward_model, domains: [general], args: {path: /models/Skywork-Reward-Llama-3.1-8B,
         max_length: 4096, batch_size: 16, mapping: sigmoid, scale: 4.0}}

It needs the weights in bf16 (16 GB for 8B parameters) plus activations for `batch_size` x `max_length`
tokens: one 40-80 GB GPU per RewardWorker. On CPU (`device: cpu`) only tiny models are practical.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping

from rewards.base import RewardResult, as_text, failure
from rewards.math_checker.extract import answer_region

_CHARS_PER_TOKEN = 32  # text beyond this many characters per allowed token is cut before tokenising
_MAX_PROMPT_CHARS = 200_000
_ROLES = ("system", "user", "assistant")


class RewardModelReward:
    """Reward model: a local Hugging Face sequence classifier (num_labels 1) scores prompt and response."""

    in_host = True
    """Built once in the RewardWorker process and called with whole batches (see the module docstring)."""

    def __init__(self, path: str, max_length: int = 2048, batch_size: int = 8, mapping: str = "sigmoid",
                 shift: float = 0.0, scale: float = 1.0, judge: str = "answer", device: str = "auto",
                 dtype: str = "auto") -> None:
        if mapping not in ("sigmoid", "raw") or judge not in ("answer", "completion"):
            raise ValueError("reward_model: mapping must be 'sigmoid' or 'raw', judge 'answer' or 'completion'.")
        if max_length < 8 or batch_size < 1 or not scale > 0:
            raise ValueError("reward_model: max_length must be at least 8, batch_size at least 1, scale above 0.")
        if not (Path(path) / "config.json").is_file():
            raise ValueError(f"reward_model: no Hugging Face checkpoint at path {path!r} (no config.json there).")
        self.max_length, self.batch_size, self.mapping = max_length, batch_size, mapping
        self.shift, self.scale, self.judge = shift, scale, judge
        self._load(path, device, dtype)

    def _load(self, path: str, device: str, dtype: str) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ValueError(f"reward_model: dtype {dtype!r} is not a torch dtype (try 'bfloat16' or 'float32').")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch_dtype)
        if self.model.config.num_labels != 1:
            raise ValueError(f"reward_model: the model at {path!r} has num_labels={self.model.config.num_labels}; "
                             "a reward model has one output (num_labels 1).")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:  # the classifier finds each sequence's last token by it
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.device).eval()

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        return self.batch([completion], [sample])[0]

    def batch(self, completions: list[Any], samples: list[Mapping[str, Any]],
              deadline: float | None = None) -> list[RewardResult]:
        """One result per sample; no chunk starts after `deadline` (a time.monotonic() instant): its samples
        time out."""
        results: list[RewardResult | None] = [None] * len(completions)
        encoded: list[tuple[int, list[int], int]] = []  # (index, token ids, tokens cut)
        for i, (completion, sample) in enumerate(zip(completions, samples)):
            rendered = self.encode(completion, sample if isinstance(sample, Mapping) else {})
            if isinstance(rendered, RewardResult):
                results[i] = rendered
            else:
                encoded.append((i, *rendered))
        encoded.sort(key=lambda item: len(item[1]))  # similar lengths share a batch: less padding
        for start in range(0, len(encoded), self.batch_size):
            chunk = encoded[start:start + self.batch_size]
            if deadline is not None and time.monotonic() >= deadline:
                for i, _, _ in chunk:
                    results[i] = failure("timeout", "The reward model reached its deadline before this sample's chunk.")
                continue
            for (i, ids, cut), scored in zip(chunk, self._forward([ids for _, ids, _ in chunk])):
                results[i] = scored if isinstance(scored, RewardResult) else self._result(scored, len(ids), cut)
        return results  # type: ignore[return-value]

    def encode(self, completion: Any, sample: Mapping[str, Any]) -> tuple[list[int], int] | RewardResult:
        """Token ids of the conversation ending in the response, and how many tokens were cut from its start."""
        text = as_text(completion)
        if self.judge == "answer":
            region, _ = answer_region(text)
            if region is None:
                return failure("no_answer", "The reasoning never ends (no </think>), so there is no answer to judge.")
            text = region
        response = text.strip()[-self.max_length * _CHARS_PER_TOKEN:]
        if not response:
            return failure("no_answer", "The response to judge is empty.")
        messages = conversation(sample) + [{"role": "assistant", "content": response}]
        if self.tokenizer.chat_template:
            rendered = self.tokenizer.apply_chat_template(messages, tokenize=False)
            ids = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer("\n\n".join(m["content"] for m in messages))["input_ids"]
        cut = max(0, len(ids) - self.max_length)
        if cut:
            keep_first = ids[0] == self.tokenizer.bos_token_id
            ids = ids[:1] + ids[cut + 1:] if keep_first else ids[cut:]
        return ids, cut

    def _forward(self, batch: list[list[int]]) -> list[float | RewardResult]:
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in batch], device=self.device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch], device=self.device)
        try:
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().tolist()
        except Exception as exc:  # noqa: BLE001 - out of memory, a broken checkpoint: this chunk scores 0
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            message = f"The reward model failed on a batch of {len(batch)}: {type(exc).__name__}: {exc}"[:300]
            return [failure("reward_error", message) for _ in batch]
        return logits

    def _result(self, logit: float, tokens: int, cut: int) -> RewardResult:
        details: dict[str, Any] = {"logit": logit, "tokens": tokens}
        if cut:
            details["truncated_tokens"] = cut
        if not math.isfinite(logit):
            return failure("invalid_score", f"The reward model returned a non-finite logit ({logit}).", **details)
        value = (logit - self.shift) / self.scale
        if self.mapping == "sigmoid":
            value = 0.5 * (1.0 + math.tanh(value / 2))  # the logistic function, without overflow
        return RewardResult(value, details)


def conversation(sample: Mapping[str, Any]) -> list[dict[str, str]]:
    """The turns before the response: `prompt` (a string or messages) or `messages` up to the last user turn,
    with `system` first when the sample has one and the turns do not."""
    prompt = sample.get("prompt")
    if isinstance(prompt, str):
        turns = [{"role": "user", "content": prompt}]
    else:
        raw = prompt if isinstance(prompt, list) else sample.get("messages")
        turns = [{"role": m["role"], "content": as_text(m.get("content"), _MAX_PROMPT_CHARS)}
                 for m in (raw if isinstance(raw, list) else []) if isinstance(m, Mapping) and m.get("role") in _ROLES]
        while turns and turns[-1]["role"] == "assistant":
            turns.pop()
    turns = [{**t, "content": as_text(t["content"], _MAX_PROMPT_CHARS)} for t in turns]
    system = sample.get("system")
    if isinstance(system, str) and system and not (turns and turns[0]["role"] == "system"):
        turns.insert(0, {"role": "system", "content": system})
    return turns

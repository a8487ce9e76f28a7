"""Build a byte-level BPE tokenizer locally and save it as a Hugging Face tokenizer (no hub downloads).

Digits are split one per token (as Llama and DeepSeek do), so the model sees columns of digits the same way
whatever the number; the R1 tags are single added tokens so a reward can find them and a model can emit
them in one step. The chat template is stored in tokenizer_config.json, where transformers and vLLM both
read it, so the trainer and the rollout engine render conversations identically.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<|pad|>", "<|begin|>", "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
R1_TAGS = ("<think>", "</think>", "<answer>", "</answer>")

# One turn is `<|role|>content<|end|>`; generation starts after `<|assistant|>` and stops at `<|end|>`.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and save a Hugging Face tokenizer to ``out_dir``."""
    special = [PAD, BOS, EOS, *ROLE_TOKENS]
    if vocab_size < 256 + len(special) + len(R1_TAGS):
        raise ValueError(f"vocab_size={vocab_size} is too small: byte-level BPE needs at least "
                         f"{256 + len(special) + len(R1_TAGS)} entries (256 bytes plus special tokens).")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(R1_TAGS),
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS), clean_up_tokenization_spaces=False,
    )
    hf.add_tokens(list(R1_TAGS))  # not special: decoding keeps them, rewards read them
    hf.chat_template = CHAT_TEMPLATE
    hf.model_max_length = 1 << 16
    hf.save_pretrained(str(out_dir))
    return hf

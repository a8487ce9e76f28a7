"""A tiny reward model built locally (no hub): a Qwen2 sequence classifier with one output and a BPE tokenizer
trained on the synthetic general rows, with the project's chat template."""

from __future__ import annotations

from pathlib import Path


def build_tiny_reward_model(out_dir: Path, num_labels: int = 1, chat_template: bool = True) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    from orchestrator.data.general import make_general_split
    from orchestrator.data.tokenizer import build_bpe_tokenizer

    rows = make_general_split("sft", 300)
    tok = build_bpe_tokenizer((r["prompt"] + "\n" + r["response"] for r in rows), 400, out_dir)
    if not chat_template:  # transformers 5 keeps the template in its own file
        (out_dir / "chat_template.jinja").unlink()
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         num_labels=num_labels, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    model = Qwen2ForSequenceClassification(config)
    with torch.no_grad():  # a random head gives logits near 0; spread them so scores differ visibly
        model.score.weight.mul_(10.0)
    model.save_pretrained(str(out_dir))
    return out_dir

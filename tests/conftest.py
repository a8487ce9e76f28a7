"""Shared fixtures: a tiny checkpoint built locally (no hub) and the synthetic rows it was built from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every Ray these tests start stays on loopback (see orchestrator/loopback.py); set before ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def sft_rows() -> list[dict]:
    from orchestrator.data.synthetic import make_split

    return make_split("sft", 256, seed=0, digits=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, sft_rows) -> Path:
    """A 2-layer Qwen2 with random weights and a BPE tokenizer trained on the synthetic SFT rows."""
    from orchestrator.config import InitSpec
    from orchestrator.fresh_model import materialize

    init = InitSpec.model_validate({
        "arch": "qwen2", "seed": 0,
        "config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 2, "num_key_value_heads": 1},
        "tokenizer": {"vocab_size": 400, "train_on": ["sft"]},
    })
    out = tmp_path_factory.mktemp("tiny") / "model"
    return materialize("tiny", init, (r["prompt"] + "\n" + r["response"] for r in sft_rows), out)


@pytest.fixture(scope="session")
def tiny_v3(tmp_path_factory, sft_rows) -> Path:
    """Our DeepSeek-V3 at its tiny default size, with a BPE tokenizer trained on the synthetic SFT rows."""
    from orchestrator.config import InitSpec
    from orchestrator.fresh_model import materialize

    init = InitSpec.model_validate({"arch": "deepseek_v3", "config": {"hidden_size": 64},
                                    "tokenizer": {"vocab_size": 400, "train_on": ["sft"]}})
    out = tmp_path_factory.mktemp("v3") / "model"
    return materialize("v3", init, (r["prompt"] + "\n" + r["response"] for r in sft_rows), out)


def teacher_forced(model, seq: list[int]) -> list[float]:
    """log p(seq[i] | seq[:i]) for i >= 1 from a model that returns ``.logits`` (ours or transformers')."""
    import torch

    with torch.no_grad():
        logp = model(torch.tensor([seq])).logits[0].log_softmax(-1)
    return [float(logp[i - 1, seq[i]]) for i in range(1, len(seq))]

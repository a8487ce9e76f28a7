"""RolloutWorker (vLLM CPU in a Ray actor): serves a checkpoint faithfully and swaps weights in place."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from actors.types import SamplingParams
from orchestrator.cluster import spawn_rollout
from orchestrator.config import ClusterSpec, RoleResources, RolloutEngineSpec
from orchestrator.data.chat import encode_prompt


@pytest.fixture(scope="module")
def rollout(ray_local):
    cluster = ClusterSpec(rollout=RoleResources(workers=1, cpus=1, threads=1))
    group = spawn_rollout(cluster.rollout, cluster, RolloutEngineSpec(max_model_len=256).settings())
    yield group
    group.shutdown()


def _hf_logprobs(path, seq: list[int]) -> list[float]:
    model = AutoModelForCausalLM.from_pretrained(str(path))
    with torch.no_grad():
        logp = model(torch.tensor([seq])).logits[0].log_softmax(-1)
    return [float(logp[i - 1, seq[i]]) for i in range(1, len(seq))]


def test_generates_n_samples_with_logprobs(rollout, tiny_checkpoint, sft_rows):
    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    [info] = rollout.call("load", str(tiny_checkpoint), 3)
    assert info["version"] == 3
    prompts = [encode_prompt(tok, r) for r in sft_rows[:5]]
    [out] = rollout.call("generate", prompts, SamplingParams(n=3, temperature=1.0, max_tokens=16, seed=0))
    assert len(out) == 15 and [r.prompt_index for r in out] == [i for i in range(5) for _ in range(3)]
    for r in out:
        assert r.prompt_ids == prompts[r.prompt_index] and r.policy_version == 3
        assert 1 <= len(r.response_ids) <= 16 and len(r.response_logprobs) == len(r.response_ids)
        assert all(lp <= 0.0 for lp in r.response_logprobs)
        assert r.finish_reason in ("stop", "length")
    # The engine's sampled-token logprobs agree with transformers' teacher-forced ones on the same tokens.
    r = out[0]
    ours = _hf_logprobs(tiny_checkpoint, r.prompt_ids + r.response_ids)[len(r.prompt_ids) - 1:]
    assert max(abs(a - b) for a, b in zip(ours, r.response_logprobs)) < 1e-3


def test_in_place_reload_matches_the_checkpoint(rollout, tiny_checkpoint, sft_rows, tmp_path):
    """After serving A, loading B in place gives exactly B's teacher-forced logprobs (as transformers computes
    them), and the greedy output changes."""
    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    seq = encode_prompt(tok, sft_rows[0]) + tok(sft_rows[0]["response"], add_special_tokens=False)["input_ids"]
    rollout.call("load", str(tiny_checkpoint), 0)
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=12)
    [[before]] = rollout.call("generate", [seq[:20]], greedy)

    model = AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    other = tmp_path / "perturbed"
    model.save_pretrained(str(other))
    tok.save_pretrained(str(other))

    [info] = rollout.call("load", str(other), 1)
    assert info["reloaded_in_place"]
    [[served]] = rollout.call("prompt_logprobs", [seq])
    expected = _hf_logprobs(other, seq)
    assert served[0] is None
    assert max(abs(a - b) for a, b in zip(served[1:], expected)) < 1e-3
    [[after]] = rollout.call("generate", [seq[:20]], greedy)
    assert after.response_ids != before.response_ids and after.policy_version == 1


def test_tied_embeddings_get_a_fresh_engine(rollout, tiny_checkpoint, sft_rows, tmp_path):
    """A tied-embedding model cannot be reloaded in place exactly, so the worker rebuilds its engine; the
    served logprobs are still the checkpoint's."""
    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint), tie_word_embeddings=True)
    tied = tmp_path / "tied"
    model.save_pretrained(str(tied))
    tok.save_pretrained(str(tied))
    rollout.call("load", str(tiny_checkpoint), 0)
    [info] = rollout.call("load", str(tied), 1)
    assert not info["reloaded_in_place"]
    seq = encode_prompt(tok, sft_rows[1])
    [[served]] = rollout.call("prompt_logprobs", [seq])
    assert max(abs(a - b) for a, b in zip(served[1:], _hf_logprobs(tied, seq))) < 1e-3


def test_generate_before_load_is_a_clear_error(ray_local):
    from actors.rollout import RolloutWorker

    with pytest.raises(RuntimeError, match="before load"):
        RolloutWorker(RolloutEngineSpec().settings()).generate([[1, 2]], SamplingParams())

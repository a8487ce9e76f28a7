"""The `reward_model` plugin on a tiny local classifier: chat template, batching, truncation, mapping, failures,
and that the reward pool runs it in the host process with whole batches."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from orchestrator.data.general import make_general_split
from rewards.isolation.pool import RewardPool
from rewards.registry import get_reward
from rewards.reward_model import RewardModelReward
from tests.tiny_reward_model import build_tiny_reward_model


@pytest.fixture(scope="module")
def rm_path(tmp_path_factory):
    return build_tiny_reward_model(tmp_path_factory.mktemp("rm") / "model")


@pytest.fixture(scope="module")
def rm(rm_path) -> RewardModelReward:
    return RewardModelReward(str(rm_path), mapping="raw")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return make_general_split("sft", 12, seed=3)


def manual_logit(path, ids: list[int]) -> float:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    with torch.no_grad():
        return float(model(torch.tensor([ids])).logits[0, 0])


def test_score_is_the_classifier_logit_on_the_chat_templated_answer(rm, rm_path, rows):
    from transformers import AutoTokenizer

    row = rows[0]
    result = rm(row["response"], row)
    tok = AutoTokenizer.from_pretrained(str(rm_path))
    answer = row["response"].split("<answer>")[1].split("</answer>")[0]
    text = tok.apply_chat_template([{"role": "user", "content": row["prompt"]},
                                    {"role": "assistant", "content": answer}], tokenize=False)
    assert text.startswith("<|begin|><|user|>") and text.endswith("<|end|>")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert result.details["tokens"] == len(ids)
    assert result.score == pytest.approx(manual_logit(rm_path, ids), abs=1e-5)
    # judge: answer ignores the reasoning; judge: completion does not
    rethought = row["response"].replace("<think>\n", "<think>\nsomething else entirely\n")
    assert rm(rethought, row).score == pytest.approx(result.score, abs=1e-6)
    whole = RewardModelReward(str(rm_path), mapping="raw", judge="completion")
    assert whole(rethought, row).score != pytest.approx(whole(row["response"], row).score, abs=1e-4)


def test_batches_equal_one_at_a_time(rm_path, rows):
    batched = RewardModelReward(str(rm_path), mapping="raw", batch_size=5)
    completions = [r["response"] for r in rows]
    together = [r.score for r in batched.batch(completions, rows)]
    alone = [batched(c, r).score for c, r in zip(completions, rows)]
    assert together == pytest.approx(alone, abs=1e-4)
    assert len({round(s, 3) for s in alone}) > len(rows) // 2  # the scores really depend on the input


def test_sigmoid_mapping_with_shift_and_scale(rm_path, rm, rows):
    row = rows[1]
    logit = rm(row["response"], row).score
    mapped = RewardModelReward(str(rm_path), shift=logit - 1.0, scale=2.0)(row["response"], row)
    assert mapped.score == pytest.approx(1 / (1 + math.exp(-0.5)), abs=1e-5)
    assert mapped.details["logit"] == pytest.approx(logit, abs=1e-5)


def test_long_input_loses_its_start_and_keeps_bos(rm_path, rows):
    from transformers import AutoTokenizer

    short = RewardModelReward(str(rm_path), mapping="raw", max_length=24)
    row = rows[2]
    long_answer = "<think>x</think><answer>" + "moon star tree " * 40 + "end</answer>"
    result = short(long_answer, row)
    assert result.details["tokens"] == 24 and result.details["truncated_tokens"] > 0
    tok = AutoTokenizer.from_pretrained(str(rm_path))
    text = tok.apply_chat_template([{"role": "user", "content": row["prompt"]},
                                    {"role": "assistant", "content": "moon star tree " * 39 + "moon star tree end"}],
                                   tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    kept = ids[:1] + ids[len(ids) - 23:]
    assert kept[0] == tok.bos_token_id
    assert result.score == pytest.approx(manual_logit(rm_path, kept), abs=1e-5)


def test_without_a_chat_template_the_turns_are_joined(tmp_path, rows):
    from transformers import AutoTokenizer

    path = build_tiny_reward_model(tmp_path / "plain", chat_template=False)
    reward = RewardModelReward(str(path), mapping="raw")
    row = rows[3]
    answer = row["response"].split("<answer>")[1].split("</answer>")[0]
    ids = AutoTokenizer.from_pretrained(str(path))(row["prompt"] + "\n\n" + answer)["input_ids"]
    assert reward(row["response"], row).score == pytest.approx(manual_logit(path, ids), abs=1e-5)


def test_messages_prompt_and_system(rm, rows):
    row = rows[4]
    as_messages = {"messages": [{"role": "user", "content": row["prompt"]},
                                {"role": "assistant", "content": "an old answer"}]}
    assert rm(row["response"], as_messages).score == pytest.approx(rm(row["response"], row).score, abs=1e-6)
    with_system = rm(row["response"], {**row, "system": "Be brief."})
    assert with_system.details["tokens"] > rm(row["response"], row).details["tokens"]


def test_failures_score_zero_with_a_reason(rm_path, rm, rows):
    safe = get_reward("reward_model", path=str(rm_path))
    assert safe("<think>never ends", rows[0]).details["error"] == "no_answer"
    assert safe("<think>a</think>   ", rows[0]).details["error"] == "no_answer"
    for hostile in (None, bytes(range(256)) * 40, "\x00" * 1000 + "ok", "z" * 1_000_000):
        result = safe(hostile, "not a mapping")
        assert math.isfinite(result.score) and 0.0 <= result.score <= 1.0
    huge = RewardModelReward(str(rm_path), max_length=64)("w " * 500_000, {})
    assert huge.details["tokens"] == 64 and huge.details["truncated_tokens"] > 0

    broken = RewardModelReward(str(rm_path), batch_size=2)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    broken.model.forward = out_of_memory
    results = broken.batch([r["response"] for r in rows[:3]] + ["<think>x"], rows[:4])
    assert [r.score for r in results] == [0.0] * 4
    assert all(r.details["error"] == "reward_error" and "out of memory" in r.details["message"] for r in results[:3])
    assert results[3].details["error"] == "no_answer"


def test_bad_configuration_fails_at_construction(tmp_path, rm_path):
    with pytest.raises(ValueError, match="no Hugging Face checkpoint at path"):
        RewardModelReward(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="mapping must be"):
        RewardModelReward(str(rm_path), mapping="softmax")
    with pytest.raises(ValueError, match="not a torch dtype"):
        RewardModelReward(str(rm_path), dtype="float7")
    two = build_tiny_reward_model(tmp_path / "two", num_labels=2)
    with pytest.raises(ValueError, match="num_labels=2"):
        RewardModelReward(str(two))
    with pytest.raises(ValueError, match="cannot be built with args"):
        get_reward("reward_model", path=str(rm_path), temperature=1.0)


def test_pool_runs_it_in_the_host_with_whole_batches(rm_path, rows, monkeypatch):
    calls: list[int] = []
    original = RewardModelReward.batch

    def counting(self, completions, samples):
        calls.append(len(completions))
        return original(self, completions, samples)

    monkeypatch.setattr(RewardModelReward, "batch", counting)  # only visible in this process, not the pool's
    specs = [{"name": "format", "weight": 0.5}, {"name": "instruction", "domains": ["general"]},
             {"name": "reward_model", "domains": ["general"], "weight": 0.1,
              "args": {"path": str(rm_path), "mapping": "raw"}}]
    samples = rows[:5] + [{"prompt": "1 + 1?", "answer": "2", "domain": "math"}]
    completions = [r["response"] for r in rows[:5]] + ["<think>1 + 1</think><answer>2</answer>"]
    with RewardPool(specs, num_procs=1) as pool:
        assert [s.in_host for s in pool.specs] == [False, False, True]
        scored = pool.score(completions, samples)
    assert calls == [5]  # one call with every general sample, none per sample
    direct = RewardModelReward(str(rm_path), mapping="raw")
    for s, c, row in zip(scored[:5], completions, rows):
        expected = direct(c, row).score
        assert s.components == pytest.approx({"format": 1.0, "instruction": 1.0, "reward_model": expected}, abs=1e-4)
        assert s.total == pytest.approx(0.5 + 1.0 + 0.1 * expected, abs=1e-4)
    assert scored[5].components == {"format": 1.0}


def test_checkpoint_copy_is_loaded_from_its_own_path(tmp_path, rm_path, rm, rows):
    """The path is all the plugin needs: a moved checkpoint scores the same."""
    moved = tmp_path / "moved"
    shutil.copytree(rm_path, moved)
    row = rows[5]
    assert RewardModelReward(str(moved), mapping="raw")(row["response"], row).score == \
        pytest.approx(rm(row["response"], row).score, abs=1e-6)

"""Synthetic task, local tokenizer, chat templating and dataset loading."""

from __future__ import annotations

import json
import re
from fractions import Fraction

import pytest

from orchestrator.config import DatasetSpec
from orchestrator.data.chat import encode_prompt, encode_sft, pad_batch
from orchestrator.data.loading import materialize, read_rows
from orchestrator.data.synthetic import make_split
from rewards.math_checker.extract import extract_answer
from rewards.registry import get_reward


def test_splits_are_deterministic_and_eval_is_held_out():
    a, b = make_split("sft", 500, seed=3), make_split("sft", 500, seed=3)
    assert a == b
    assert make_split("sft", 50, seed=4) != make_split("sft", 50, seed=3)
    eval_prompts = {r["prompt"] for r in make_split("eval", 500)}
    dev_prompts = {r["prompt"] for r in make_split("dev", 500)}
    train_prompts = {r["prompt"] for r in a} | {r["prompt"] for r in make_split("rl", 500)}
    assert not eval_prompts & train_prompts and not dev_prompts & train_prompts and not eval_prompts & dev_prompts
    assert len(eval_prompts) == len(dev_prompts) == 500


@pytest.mark.parametrize("mul_methods", [("long",), ("long", "tens")])
def test_chain_of_thought_is_correct_arithmetic(mul_methods):
    """Every equation the worked solutions state is true, and each ends in its gold answer."""
    for row in make_split("sft", 400, digits=3, mul_methods=mul_methods):
        thought = row["response"].split("</think>")[0]
        for lhs, rhs in re.findall(r"(\d+(?: [-+*] \d+)+) = (\d+)", thought):
            assert eval(lhs) == int(rhs), (lhs, rhs, row["prompt"])
        for whole, parts in re.findall(r"^(\d+) = (\d+(?: \+ \d+)+)$", thought, flags=re.M):  # place-value split
            assert eval(parts) == int(whole), (whole, parts, row["prompt"])
        assert extract_answer(row["response"]).answer == row["answer"]
        assert get_reward("math")(row["response"], row).score == 1.0


def test_mul_methods_mix_without_changing_the_problems():
    """Both methods appear, about half each, and the problems (prompts, answers, held-out splits) are the
    same whichever methods the chains use."""
    ops = ("add", "mul")
    long_rows = make_split("sft", 300, ops=ops)
    mixed = make_split("sft", 300, ops=ops, mul_methods=("long", "tens"))
    tens_only = make_split("sft", 300, ops=ops, mul_methods=("tens",))
    for rows in (mixed, tens_only):
        assert [(r["prompt"], r["answer"]) for r in rows] == [(r["prompt"], r["answer"]) for r in long_rows]
    mul = [r["response"] for r in mixed if r["op"] == "mul"]
    by_tens = sum("so " in r or re.search(r"^\d+ = \d+ \+", r, flags=re.M) is not None for r in mul)
    assert 0.3 < by_tens / len(mul) < 0.7
    assert make_split("eval", 200, ops=ops, mul_methods=("long", "tens")) == make_split("eval", 200, ops=ops)


def test_worked_share_of_bare_answers():
    """``worked`` < 1 turns that share of the responses into bare answers (an empty think block), chosen per
    prompt, leaving the problems as they were; a bare answer is still a correct, well-formed R1 response."""
    full = make_split("sft", 400, ops=("add", "mul"))
    mixed = make_split("sft", 400, ops=("add", "mul"), worked=0.3)
    assert [(r["prompt"], r["answer"]) for r in mixed] == [(r["prompt"], r["answer"]) for r in full]
    bare = [r for r in mixed if r["response"].startswith("<think>\n</think>")]
    assert 0.6 < len(bare) / len(mixed) < 0.8
    for r in bare:
        assert r["response"] == f"<think>\n</think>\n<answer>{r['answer']}</answer>"
        assert get_reward("math")(r["response"], r).score == 1.0
    worked = {r["prompt"]: r["response"] for r in full}
    assert all(worked[r["prompt"]] == r["response"] for r in mixed if r not in bare)
    assert not any(r["response"].startswith("<think>\n</think>") for r in full)


def test_fraction_answers_are_reduced():
    rows = [r for r in make_split("sft", 300) if r["op"] in ("frac", "share")]
    assert rows
    for r in rows:
        value = Fraction(r["answer"])
        assert r["answer"] == (str(value.numerator) if value.denominator == 1
                               else f"{value.numerator}/{value.denominator}")


def test_tokenizer_keeps_tags_whole_and_splits_digits(tiny_checkpoint):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1
    pieces = tok.convert_ids_to_tokens(tok("1234", add_special_tokens=False)["input_ids"])
    assert pieces == ["1", "2", "3", "4"]
    assert tok.decode(tok("<think>\n2 + 3 = 5\n</think>", add_special_tokens=False)["input_ids"]) == \
        "<think>\n2 + 3 = 5\n</think>"


def test_sft_mask_covers_exactly_the_assistant_turn(tiny_checkpoint, sft_rows):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    row = sft_rows[0]
    ex = encode_sft(tok, row, max_len=512)
    prompt = encode_prompt(tok, row)
    assert ex.input_ids[: len(prompt)] == prompt
    assert ex.loss_mask == [0] * len(prompt) + [1] * (len(ex.input_ids) - len(prompt))
    trained = [t for t, m in zip(ex.input_ids, ex.loss_mask) if m]
    assert tok.decode(trained) == row["response"] + "<|end|>"
    assert encode_sft(tok, row, max_len=len(ex.input_ids) - 1) is None  # too long: dropped, not truncated
    ids, mask = pad_batch([ex, encode_sft(tok, sft_rows[1], 512)], tok.pad_token_id)
    assert len(ids[0]) == len(ids[1]) and sum(mask[0]) == sum(ex.loss_mask)


def test_multi_turn_masks_every_assistant_turn(tiny_checkpoint):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1 + 1?"},
                        {"role": "assistant", "content": "2"}, {"role": "user", "content": "2 + 2?"},
                        {"role": "assistant", "content": "4"}]}
    ex = encode_sft(tok, row, max_len=512)
    trained = tok.decode([t for t, m in zip(ex.input_ids, ex.loss_mask) if m])
    assert trained == "2<|end|>4<|end|>"


def test_loading_user_files_reports_bad_rows(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n\n" +
                    json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    out = materialize("good", DatasetSpec(path=str(good)), tmp_path / "out")
    assert [r["id"] for r in read_rows(out)] == ["good-0", "good-1"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"prompt": "p"}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken.jsonl:2: not a JSON object"):
        read_rows(broken)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    with pytest.raises(ValueError, match=r"wrong.jsonl row 1: messages\[0\] needs a role"):
        materialize("wrong", DatasetSpec(path=str(wrong)), tmp_path / "out")


def test_parquet_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}]), path)
    assert [r["answer"] for r in read_rows(path)] == ["1", "2"]

"""The synthetic general task: deterministic, held out, consistent with its rewards, short, and configurable."""

from __future__ import annotations

import json
import typing
from collections import Counter

import pytest

from orchestrator.config import DatasetSpec, SyntheticSpec
from orchestrator.data.code import KINDS as CODE_KINDS
from orchestrator.data.general import KINDS, WORDS, make_general_split
from orchestrator.data.loading import materialize, read_rows
from orchestrator.yaml_errors import PipelineError, parse_pipeline
from rewards.registry import get_reward

SPLITS = ("sft", "rl", "dev", "eval")


def test_splits_are_deterministic_and_disjoint():
    rows = {split: make_general_split(split, 400, seed=1) for split in SPLITS}
    assert make_general_split("sft", 400, seed=1) == rows["sft"]
    assert make_general_split("sft", 50, seed=2) != rows["sft"][:50]
    prompts = {split: {r["prompt"] for r in split_rows} for split, split_rows in rows.items()}
    assert all(len(p) == 400 for p in prompts.values())  # no prompt twice within a split
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not prompts[a] & prompts[b], (a, b)
    assert all("response" in r for r in rows["sft"])
    assert not any("response" in r for split in ("rl", "dev", "eval") for r in rows[split])


def test_every_kind_appears_with_its_row_shape():
    rows = make_general_split("rl", 900)
    assert set(Counter(r["kind"] for r in rows)) == set(KINDS)
    for r in rows:
        assert set(r) == {"id", "prompt", "domain", "kind", "constraints"}
        assert r["domain"] == "general" and r["constraints"]
        assert json.loads(json.dumps(r["constraints"])) == r["constraints"]


def test_sft_references_pass_instruction_and_format_rewards():
    """Generator/reward consistency: each reference response meets its own constraints and the R1 template."""
    instruction = get_reward("instruction", all_or_nothing=True)
    strict_format = get_reward("format", require_answer_tag=True)
    rows = make_general_split("sft", 1500, seed=5)
    assert set(r["kind"] for r in rows) == set(KINDS)
    for r in rows:
        result = instruction(r["response"], r)
        assert result.score == 1.0, (r, result.details)
        assert strict_format(r["response"], r).score == 1.0, r
        thought = r["response"].split("</think>")[0].removeprefix("<think>").strip()
        assert thought and "\n" not in thought  # one line of thought, not a chain


def test_wrong_answers_do_not_pass():
    """A constraint that can never fail would make every row trivially solved: swap answers between rows."""
    instruction = get_reward("instruction", all_or_nothing=True)
    rows = make_general_split("sft", 600, seed=6)
    passed = sum(instruction(other["response"], r).score for r, other in zip(rows, rows[1:] + rows[:1]))
    assert passed / len(rows) < 0.05


def test_prompts_are_short_and_use_a_small_vocabulary(tmp_path):
    from orchestrator.data.synthetic import make_split
    from orchestrator.data.tokenizer import build_bpe_tokenizer

    rows = make_general_split("sft", 2000)
    texts = [r["prompt"] + "\n" + r["response"] for r in rows + make_split("sft", 2000)]
    tok = build_bpe_tokenizer(texts, 512, tmp_path / "tok")
    longest = max(len(tok.apply_chat_template([{"role": "user", "content": r["prompt"]},
                                               {"role": "assistant", "content": r["response"]}]))
                  for r in rows)
    assert longest <= 128, longest  # the tiny models train on sequences of 256 tokens
    letters = {w.strip(".,?!:").lower() for r in rows for w in r["prompt"].split() if not w[0].isdigit()}
    assert set(WORDS) <= letters and len(letters) < 70, sorted(letters)


def test_config_kinds_match_the_generator_and_stray_fields_are_named():
    literal = typing.get_args(typing.get_args(SyntheticSpec.model_fields["kinds"].annotation)[0])[0]
    assert typing.get_args(literal) == KINDS + CODE_KINDS
    spec = SyntheticSpec.model_validate({"task": "general", "split": "rl", "size": 3, "kinds": ["count"]})
    assert spec.kinds == ["count"]
    with pytest.raises(ValueError, match="digits do not apply to task 'general'"):
        SyntheticSpec.model_validate({"task": "general", "split": "rl", "size": 3, "digits": 3})
    with pytest.raises(ValueError, match="kinds do not apply to task 'arithmetic'"):
        SyntheticSpec.model_validate({"split": "rl", "size": 3, "kinds": ["count"]})
    text = ("name: p\ndatasets:\n  g: {synthetic: {task: general, split: rl, size: 4, ops: [add]}}\n"
            "models: {m: {path: .}}\nstages:\n  - {name: e, kind: eval, model: m, eval: {data: g}}\n")
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, "p.yaml")
    [msg] = info.value.problems
    assert msg.startswith("p.yaml:3: datasets.g.synthetic") and "ops do not apply to task 'general'" in msg


def test_materialize_general_dataset(tmp_path):
    spec = DatasetSpec.model_validate({"synthetic": {"task": "general", "split": "sft", "size": 30,
                                                     "kinds": ["sort", "count"]}, "limit": 20})
    rows = read_rows(materialize("general_sft", spec, tmp_path))
    assert len(rows) == 20 and {r["kind"] for r in rows} == {"sort", "count"}
    assert rows == make_general_split("sft", 30, kinds=("sort", "count"))[:20]
    arithmetic = read_rows(materialize("arith", DatasetSpec.model_validate(
        {"synthetic": {"split": "sft", "size": 5, "digits": 1}}), tmp_path))
    assert {r["domain"] for r in arithmetic} == {"math"}
    with pytest.raises(ValueError, match="Unknown general task kinds"):
        make_general_split("sft", 5, kinds=("poem",))

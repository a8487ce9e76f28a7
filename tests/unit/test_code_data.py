"""The synthetic code task: deterministic, held out, its reference programs pass the real sandboxed `code` reward,
wrong ones do not, and it fits the tiny models' tokenizer and sequence budget."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.config import DatasetSpec, SyntheticSpec
from orchestrator.data.code import CONVENTIONS, KINDS, make_code_split
from orchestrator.data.loading import materialize, read_rows
from rewards.code import extract_code, parse_tests
from rewards.registry import get_reward

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("sft", "rl", "dev", "eval")


@pytest.fixture(scope="module")
def code_reward():
    if not (shutil.which("bwrap") or shutil.which("unshare")):
        pytest.skip("no sandbox backend (bubblewrap or unshare) on this machine")
    reward = get_reward("code")
    yield reward
    reward.close()


def _fenced(solution: str) -> str:
    return f"<think>\nplan\n</think>\n<answer>\n```python\n{solution}\n```\n</answer>"


def _sample(rows: list[dict], per_cell: int = 1) -> list[dict]:
    """A few rows of every (kind, convention) present."""
    seen: Counter = Counter()
    out = []
    for r in rows:
        if seen[(r["kind"], r["convention"])] < per_cell:
            seen[(r["kind"], r["convention"])] += 1
            out.append(r)
    return out


def test_splits_are_deterministic_and_disjoint():
    rows = {split: make_code_split(split, 300, seed=1) for split in SPLITS}
    assert make_code_split("sft", 300, seed=1) == rows["sft"]
    assert make_code_split("rl", 50, seed=2) != rows["rl"][:50]
    prompts = {split: {r["prompt"] for r in split_rows} for split, split_rows in rows.items()}
    assert all(len(p) == 300 for p in prompts.values())
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not prompts[a] & prompts[b], (a, b)
    assert all("response" in r for r in rows["sft"])
    assert not any("response" in r for split in ("rl", "dev", "eval") for r in rows[split])
    for r in rows["eval"]:
        assert set(r) == {"id", "prompt", "domain", "kind", "convention", "tests", "solution"}
        assert r["domain"] == "code" and json.loads(json.dumps(r["tests"])) == r["tests"]
    cells = Counter((r["kind"], r["convention"]) for r in rows["rl"])
    assert set(cells) == {(k, c) for k in KINDS for c in CONVENTIONS}


def test_tests_follow_the_code_rewards_conventions():
    modes = {"stdio": "stdio", "call": "call", "assert": "assert", "check": "assert"}
    for r in make_code_split("rl", 200, seed=3):
        parsed = parse_tests(r["tests"])
        assert parsed["mode"] == modes[r["convention"]]
        if r["convention"] == "check":
            assert len(parsed["inputs"]) == 1 and r["tests"]["test_code"].count("assert candidate(") == 3
        else:
            assert len(parsed["inputs"]) == 3
        if r["convention"] in ("call", "stdio"):  # outputs differ, so no constant answer passes
            assert len({json.dumps(o) for o in parsed["outputs"]}) > 1, r
        if r["convention"] == "stdio":
            assert r["prompt"].startswith("Write a Python program that reads")
        else:
            assert r["prompt"].startswith("Write a Python function ")


def test_reference_programs_pass_the_sandboxed_reward_in_every_split(code_reward):
    strict_format = get_reward("format", require_answer_tag=True)
    for split in SPLITS:
        for r in _sample(make_code_split(split, 240, seed=4)):
            completion = r.get("response") or _fenced(r["solution"])
            assert extract_code(completion).strip() == r["solution"]
            result = code_reward(completion, r)
            assert result.score == 1.0, (split, r, result.details)
            assert strict_format(completion, r).score == 1.0


def test_wrong_empty_and_stub_answers_score_zero(code_reward):
    rows = _sample(make_code_split("eval", 240, seed=5))
    for r in rows:
        name = r["tests"].get("fn_name") or r["tests"].get("entry_point") or (
            r["tests"]["asserts"][0].split()[1].split("(")[0] if "asserts" in r["tests"] else None)
        header = r["solution"].splitlines()[0]
        stub = f"{header}\n    pass" if name else "print(0)"
        for bad in ("<think>\nplan\n</think>\n<answer>no code here</answer>", _fenced(""), _fenced(stub)):
            assert code_reward(bad, r).score == 0.0, (bad, r)
    # Another problem's program, in the same convention and kind: at most a rare coincidence passes.
    many = make_code_split("eval", 400, seed=6)
    by_cell: dict = {}
    for r in many:
        by_cell.setdefault((r["kind"], r["convention"]), []).append(r)
    pairs = [(a, b) for group in by_cell.values() for a, b in zip(group[:4], group[1:5])]
    passed = 0
    for a, b in pairs:
        program = b["solution"]
        name_a, name_b = (p.split("(")[0].removeprefix("def ") for p in (a["solution"], b["solution"]))
        if a["convention"] != "stdio":  # same name, other body: the test is of the body
            program = program.replace(f"def {name_b}(", f"def {name_a}(", 1)
        passed += code_reward(_fenced(program), a).score == 1.0
    assert passed <= len(pairs) // 10, (passed, len(pairs))


def test_worked_share_and_options():
    rows = make_code_split("sft", 300, seed=7, worked=0.5)
    bare = sum(r["response"].startswith("<think>\n</think>") for r in rows)
    assert 0.35 < bare / len(rows) < 0.65
    same_problems = make_code_split("sft", 300, seed=7)
    assert [(r["prompt"], r["tests"]) for r in rows] == [(r["prompt"], r["tests"]) for r in same_problems]
    only = make_code_split("rl", 60, kinds=("string",), conventions=("check",), cases=2)
    assert {r["kind"] for r in only} == {"string"} and {r["convention"] for r in only} == {"check"}
    assert all(r["tests"]["test_code"].count("assert") == 2 for r in only)
    with pytest.raises(ValueError, match="Unknown code task conventions"):
        make_code_split("rl", 5, conventions=("pytest",))
    with pytest.raises(ValueError, match="Unknown code task kinds"):
        make_code_split("rl", 5, kinds=())


def test_config_fields_of_the_code_task():
    spec = SyntheticSpec.model_validate({"task": "code", "split": "rl", "size": 3, "kinds": ["list"], "cases": 2,
                                         "conventions": ["call"], "worked": 0.5})
    assert (spec.kinds, spec.cases, spec.conventions, spec.worked) == (["list"], 2, ["call"], 0.5)
    with pytest.raises(ValueError, match="kinds count are not kinds of task 'code'"):
        SyntheticSpec.model_validate({"task": "code", "split": "rl", "size": 3, "kinds": ["count"]})
    with pytest.raises(ValueError, match="kinds arith are not kinds of task 'general'"):
        SyntheticSpec.model_validate({"task": "general", "split": "rl", "size": 3, "kinds": ["arith"]})
    with pytest.raises(ValueError, match="cases, conventions do not apply to task 'arithmetic'"):
        SyntheticSpec.model_validate({"split": "rl", "size": 3, "cases": 2, "conventions": ["call"]})
    with pytest.raises(ValueError, match="digits do not apply to task 'code'"):
        SyntheticSpec.model_validate({"task": "code", "split": "rl", "size": 3, "digits": 2})


def test_materialize_and_validate_a_pipeline_with_the_code_domain(tmp_path):
    spec = DatasetSpec.model_validate({"synthetic": {"task": "code", "split": "eval", "size": 12}, "limit": 10})
    rows = read_rows(materialize("code_eval", spec, tmp_path))
    assert rows == make_code_split("eval", 12)[:10]
    out = subprocess.run([sys.executable, "-m", "orchestrator", "validate", str(ROOT / "pipelines/tiny_code.yaml")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_tokenizer_trains_on_code_rows_and_responses_fit_the_budget(tmp_path):
    """The tiny models' 512-entry tokenizer, trained as `tokenizer.train_on` trains it: every response within
    128 new tokens and every conversation within 256."""
    from orchestrator.data.general import make_general_split
    from orchestrator.data.synthetic import make_split
    from orchestrator.data.tokenizer import build_bpe_tokenizer

    code = make_code_split("sft", 1500)
    others = make_split("sft", 1500, ops=("add", "sub", "mul")) + make_general_split("sft", 500)
    texts = [f"{r['prompt']}\n{r['response']}" for r in code + others]
    tok = build_bpe_tokenizer(texts, 512, tmp_path / "tok")
    lengths = [len(tok(r["response"], add_special_tokens=False)["input_ids"]) for r in code]
    whole = [len(tok.apply_chat_template([{"role": "user", "content": r["prompt"]},
                                          {"role": "assistant", "content": r["response"]}])) for r in code]
    assert max(lengths) <= 128 and max(whole) <= 256, (max(lengths), max(whole))
    assert tok.decode(tok(code[0]["response"], add_special_tokens=False)["input_ids"]) == code[0]["response"]


def test_cons_at_n_votes_code_by_its_program():
    from orchestrator.stages.eval import VOTE_BY, majority_correct

    right, wrong = _fenced("def f(a):\n    return a + 1"), _fenced("def f(a):\n    return a")
    texts = [right, wrong, right + "  ", "<think>\nx\n</think>\n<answer>no code</answer>"]
    assert majority_correct(texts, [1.0, 0.0, 1.0, 0.0], VOTE_BY["code"]) == 1.0
    assert majority_correct([wrong, wrong, right], [0.0, 0.0, 1.0], VOTE_BY["code"]) == 0.0

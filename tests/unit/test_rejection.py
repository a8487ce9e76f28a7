"""Rejection-sampling filters: each rule drops what it should, in order, and the report counts why."""

from __future__ import annotations

from actors.types import Rollout
from orchestrator.config import RSFilters
from orchestrator.stages.rejection import Candidate, Curator, _infra_error
from orchestrator.stages.eval import majority_correct


def _c(row: dict, text: str, components: dict, finish: str = "stop", tokens: int = 10, error=None) -> Candidate:
    r = Rollout(prompt_index=0, prompt_ids=[1, 2], response_ids=list(range(tokens)), text=text,
                response_logprobs=None, finish_reason=finish, policy_version=7)
    return Candidate(row, r, components, error)


GOOD = "<think>\n3 + 4 = 7\n</think>\n<answer>7</answer>"
MATH = {"id": "p1", "prompt": "3 + 4?", "answer": "7", "domain": "math"}


def test_each_rule_names_its_reason_in_order():
    cur = Curator(RSFilters(min_scores={"format": 1.0}, max_response_tokens=50, max_per_prompt=2),
                  {"math", "format"}, "rs")
    cur.add_prompt([
        _c(MATH, GOOD, {"math": 1.0, "format": 1.0}),                        # kept
        _c(MATH, GOOD.replace("7</answer>", "8</answer>"), {"math": 0.0, "format": 1.0}),   # incorrect
        _c(MATH, "7", {"math": 1.0, "format": 0.0}),                         # format
        _c(MATH, "<think>\nthree plus four is seven, так\n</think>\n<answer>7</answer>", {"math": 1.0, "format": 1.0}),  # mixed
        _c(MATH, GOOD + " ", {"math": 1.0, "format": 1.0}, finish="length"),  # truncated
        _c(MATH, GOOD + "  ", {"math": 1.0, "format": 1.0}, tokens=60),       # too long
        _c(MATH, "<think>\n```py\nprint(7)\n```\n</think>\n<answer>7</answer>", {"math": 1.0, "format": 1.0}),
        _c(MATH, GOOD.upper().replace("<THINK>", "<think>"), {"math": 1.0, "format": 1.0}),  # duplicate (case)
        _c(MATH, GOOD.replace("3 + 4", "4 + 3"), {"math": 1.0, "format": 1.0}),  # kept (2nd)
        _c(MATH, GOOD.replace("3 + 4", "4+3"), {"math": 1.0, "format": 1.0}),    # cap
        _c(MATH, GOOD, {"math": 0.0}, error="timeout"),                          # reward error, not incorrect
    ])
    report = cur.report(mixed_in=3)
    assert report == {"candidates": 11, "kept": 2, "mixed_in": 3, "dropped": {
        "reward_error": 1, "incorrect": 1, "format": 1, "mixed_language": 1, "truncated": 1, "too_long": 1,
        "code_block": 1, "duplicate": 1, "per_prompt_cap": 1}}
    assert cur.prompts_with_kept == 1
    assert [c.rollout.text for c in cur.kept] == [GOOD, GOOD.replace("3 + 4", "4 + 3")]


def test_code_blocks_are_fine_in_code_and_components_that_do_not_apply_are_ignored():
    code_row = {"id": "c1", "prompt": "write f", "domain": "code"}
    general = {"id": "g1", "prompt": "say hi twice", "domain": "general"}
    cur = Curator(RSFilters(), {"math", "code", "instruction"}, "rs")
    cur.add_prompt([_c(code_row, "<think>\nok\n</think>\n```python\nf=1\n```", {"code": 1.0})])
    cur.add_prompt([_c(general, "<think>\nok\n</think>\n<answer>hi hi</answer>", {"instruction": 1.0}),
                    _c(general, "<think>\nok\n</think>\n<answer>hi</answer>", {"instruction": 0.5})])
    assert cur.report(0)["dropped"] == {"incorrect": 1}
    assert [c.row["id"] for c in cur.kept] == ["c1", "g1"]


def test_sft_rows_carry_provenance_and_keep_the_conversation_shape():
    cur = Curator(RSFilters(), {"math"}, "rs")
    chat = {"id": "m1", "messages": [{"role": "user", "content": "3 + 4?"}], "answer": "7", "domain": "math"}
    src = {"stage": "rs", "checkpoint": "reasoning_rl", "policy_version": 7}
    row = cur.sft_row(_c(MATH, GOOD, {"math": 1.0}), src, 0)
    assert row["prompt"] == "3 + 4?" and row["response"] == GOOD and row["answer"] == "7"
    assert row["source"] == {**src, "prompt_id": "p1", "policy_version": 7, "response_tokens": 10}
    assert row["rewards"] == {"math": 1.0}
    row = cur.sft_row(_c(chat, GOOD, {"math": 1.0}), src, 1)
    assert row["messages"][-1] == {"role": "assistant", "content": GOOD} and "prompt" not in row


def test_only_failures_to_run_a_reward_are_reward_errors():
    assert _infra_error({"math": {"error": "no_answer", "message": "x"}}) is None
    assert _infra_error({"math": {"error": "timeout", "message": "x"}}) == "timeout"
    assert _infra_error({"error": "worker_crashed", "message": "pool died"}) == "worker_crashed"


def test_majority_vote_uses_the_most_common_answer():
    texts = ["<answer>7</answer>", "<answer>8</answer>", "<answer>8</answer>", "no answer at all"]
    assert majority_correct(texts, [1.0, 0.0, 0.0, 0.0]) == 0.0
    assert majority_correct(texts[:2] + ["<answer>7</answer>"], [1.0, 0.0, 1.0]) == 1.0
    assert majority_correct(["nothing", "here"], [0.0, 0.0]) == 0.0

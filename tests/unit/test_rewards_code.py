"""The code reward: extraction, test formats, verdicts, and correct programs that must score 1.

Only well-behaved programs run here; hostile ones live in test_rewards_sandbox_hostile.py behind an outer
cgroup guard.
"""

from __future__ import annotations

import json
import shutil
import signal

import pytest

from rewards.code import CodeReward, extract_code, parse_tests, same, verdict
from rewards.isolation.sandbox import Limits, SandboxRun, SandboxUnavailable
from rewards.isolation.sandbox_harness import output_digest


def fenced(source: str) -> str:
    return f"<think>\nPlan it.\n</think>\nHere is my solution:\n```python\n{source}\n```\n"


@pytest.fixture(scope="module", params=["bwrap", "unshare"])
def reward(request: pytest.FixtureRequest) -> CodeReward:
    if not shutil.which(request.param):
        pytest.skip(f"{request.param} is not installed")
    try:
        return CodeReward(backend=request.param, time_limit_s=2.0)
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))


CORRECT = {
    "stdin_sum": ("import sys\nprint(sum(map(int, sys.stdin.read().split())))",
                  {"inputs": ["1 2 3\n", "10 -4\n"], "outputs": ["6\n", "6"]}),
    "trailing_whitespace": ("a, b = map(int, input().split())\nprint(a, b, ' ')\nprint()\nprint()",
                            {"inputs": ["1 2"], "outputs": ["1 2\n"]}),
    "slow_but_in_time": ("import time\ntime.sleep(0.6)\nprint(input()[::-1])",
                         {"inputs": ["abc"], "outputs": ["cba"]}),
    "deep_recursion": ("import sys\nsys.setrecursionlimit(10**6)\n"
                       "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\nprint(depth(int(input())))",
                       {"inputs": ["200000"], "outputs": ["200000"]}),
    "deep_recursion_through_c": ("import sys, functools\nsys.setrecursionlimit(10**6)\n"
                                 "@functools.lru_cache(maxsize=None)\ndef f(n):\n    return 0 if n == 0 else f(n - 1) + 1\n"
                                 "print(f(int(input())))", {"inputs": ["20000"], "outputs": ["20000"]}),
    "big_output": ("n = int(input())\nprint('\\n'.join(str(i) for i in range(n)))",
                   {"inputs": ["200000"], "outputs": ["\n".join(str(i) for i in range(200000))]}),
    "tmp_files": ("import os, tempfile\np = os.path.join(tempfile.gettempdir(), 'x.txt')\n"
                  "open(p, 'w').write(input())\nprint(open(p).read().upper())",
                  {"inputs": ["hello"], "outputs": ["HELLO"]}),
    "threads": ("from concurrent.futures import ThreadPoolExecutor\n"
                "with ThreadPoolExecutor(4) as ex:\n    print(sum(ex.map(lambda x: x * x, range(int(input())))))",
                {"inputs": ["100"], "outputs": ["328350"]}),
    "stdin_binary": ("import sys\ndata = sys.stdin.buffer.read().split()\nprint(len(data))",
                     {"inputs": ["a b c d"], "outputs": ["4"]}),
    "call_function": ("def add(a, b):\n    return a + b", {"fn_name": "add", "inputs": [[1, 2], [-5, 5]], "outputs": [3, 0]}),
    "call_solution_class": ("class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
                            "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
                            "                return (seen[target - x], i)\n            seen[x] = i",
                            {"fn_name": "twoSum", "inputs": [[[2, 7, 11, 15], 9]], "outputs": [[0, 1]]}),
    "call_livecodebench_strings": ("class Solution:\n    def maxOf(self, nums: list, k: int) -> float:\n"
                                   "        return max(nums) / k",
                                   {"fn_name": "maxOf", "inputs": ["[1, 5, 3]\n2"], "outputs": ["2.5"]}),
    "call_apps_wrapped_output": ("def f(x):\n    return x * 2", {"fn_name": "f", "inputs": [[21]], "outputs": [[42]]}),
}


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_programs_score_one(reward: CodeReward, name: str) -> None:
    source, tests = CORRECT[name]
    result = reward(fenced(source), {"tests": tests})
    assert result.score == 1.0, result.details


def test_numpy_is_importable_in_the_sandbox(reward: CodeReward) -> None:
    pytest.importorskip("numpy")
    result = reward(fenced("import numpy as np\nprint(int(np.arange(int(input())).sum()))"),
                    {"tests": {"inputs": ["10"], "outputs": ["45"]}})
    assert result.score == 1.0, result.details


def test_partial_credit_and_all_or_nothing(reward: CodeReward) -> None:
    tests = {"inputs": ["1", "2", "3", "4"], "outputs": ["1", "4", "9", "15"]}
    source = fenced("n = int(input())\nprint(n * n)")
    result = reward(source, {"tests": tests})
    assert result.score == 0.75
    assert result.details["verdicts"] == ["passed", "passed", "passed", "wrong_answer"]
    strict = CodeReward(all_or_nothing=True, backend=reward.sandbox.backend)
    assert strict(source, {"tests": tests}).score == 0.0


def test_sample_limits_are_honoured_up_to_the_maximum(reward: CodeReward) -> None:
    slow = fenced("import time\ntime.sleep(1.5)\nprint('ok')")
    tests = {"inputs": [""], "outputs": ["ok"]}
    assert reward(slow, {"tests": tests, "time_limit_s": 1.0}).details["verdicts"] == ["time_limit"]
    assert reward(slow, {"tests": tests, "time_limit_s": 3.0}).score == 1.0


def test_failures_are_reported_not_raised(reward: CodeReward) -> None:
    tests = {"inputs": ["1"], "outputs": ["1"]}
    assert reward("no code at all", {"tests": tests}).details["error"] == "no_code"
    assert reward(fenced("print(1)"), {"tests": "{not json"}).details["error"] == "no_gold"
    assert reward(fenced("print(1)"), {}).details["error"] == "no_gold"
    assert reward(fenced("def broken(:\n    pass"), {"tests": tests}).details["verdicts"] == ["runtime_error"]
    assert reward(b"\xff\xfe```python\nprint(1)\n```", {"tests": tests}).score == 1.0  # bytes in, decoded leniently


def test_extract_code_prefers_the_last_python_block_after_the_reasoning() -> None:
    text = "<think>```python\nprint('draft')\n```</think>```\nuntagged\n```\n```python\nfirst\n```\n```py\nlast\n```"
    assert extract_code(text) == "last\n"
    assert extract_code("```\nonly untagged\n```") == "only untagged\n"
    assert extract_code("<think>```python\nx\n```") is None  # still thinking
    assert extract_code("cut off:\n```python\nprint(1)\nprint(") == "print(1)\nprint("
    assert extract_code("no fences") is None


def test_parse_tests_accepts_apps_and_livecodebench_shapes() -> None:
    apps = parse_tests(json.dumps({"inputs": [["1", "2"]], "outputs": [["3"]]}))
    assert apps == {"mode": "stdio", "fn_name": None, "inputs": ["1\n2"], "outputs": ["3"]}
    lcb = parse_tests([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}])
    assert lcb["inputs"] == ["1 2\n"] and lcb["outputs"] == ["3\n"]
    call = parse_tests({"fn_name": "f", "inputs": ["[1, 2]\n3"], "outputs": ["[4]"]})
    assert call["inputs"] == [[[1, 2], 3]] and call["outputs"] == [[4]]
    with pytest.raises(ValueError, match="must match"):
        parse_tests({"inputs": ["1"], "outputs": []})


def _run(stdout: str = "", **record: object) -> SandboxRun:
    base = {"timed_out": False, "exit_code": 0, "signal": None, "stdout_sha256": output_digest(stdout),
            "stdout_bytes": len(stdout), "stderr_tail": "", "result": None, "result_bytes": 0}
    return SandboxRun(records=[{**base, **record}])


@pytest.mark.parametrize(
    ("record", "expected", "mode", "want"),
    [
        ({"stdout": "3\n"}, "3", "stdio", "passed"),
        ({"stdout": "3\n", "exit_code": 1}, "3", "stdio", "runtime_error"),  # right output, failed exit
        ({"timed_out": True, "stdout": "3"}, "3", "stdio", "time_limit"),
        ({"signal": signal.SIGXCPU}, "3", "stdio", "time_limit"),
        ({"skipped": True}, "3", "stdio", "time_limit"),
        ({"stdout_bytes": 10 << 20, "exit_code": 1}, "3", "stdio", "output_limit"),
        ({"stderr_tail": "MemoryError\n", "exit_code": 1}, "3", "stdio", "memory_limit"),
        ({"signal": signal.SIGSEGV}, "3", "stdio", "runtime_error"),
        ({"stdout": "4\n"}, "3", "stdio", "wrong_answer"),
        ({"result": "[1, 2]"}, [1, 2], "call", "passed"),
        ({"result": "true"}, 1, "call", "wrong_answer"),  # a bool is not a number
        ({"result": "[[[[" * 10000}, [1], "call", "wrong_answer"),
        ({"result": "[1]", "result_bytes": 2 << 20}, [1], "call", "output_limit"),
        ({"result": None}, 0, "call", "wrong_answer"),
    ],
)
def test_verdicts_come_from_raw_records(record: dict, expected: object, mode: str, want: str) -> None:
    assert verdict(_run(**record), 0, expected, mode, Limits()) == want


def test_missing_record_is_a_sandbox_error() -> None:
    assert verdict(SandboxRun(records=[], error="died"), 0, "1", "stdio", Limits()) == "sandbox_error"


def test_line_and_value_comparison() -> None:
    assert output_digest("1 2  \n3\r\n\n\n") == output_digest("1 2\n3")
    assert output_digest("a\n\nb") != output_digest("a\nb")
    assert output_digest(" 1") != output_digest("1")  # leading whitespace matters
    assert output_digest("\ud800x") == output_digest("\ud800x")  # lone surrogates do not raise
    assert same([1, 2.0000000001, {"a": None}], [1, 2, {"a": None}])
    assert not same(10**400, 10**400 + 1)
    assert not same(True, 1) and not same("1", 1)


def test_total_budget_skips_the_remaining_tests(reward: CodeReward) -> None:
    budgeted = CodeReward(max_total_s=1.0, backend=reward.sandbox.backend)
    tests = {"inputs": [str(i) for i in range(10)], "outputs": [str(i) for i in range(10)]}
    result = budgeted(fenced("import time\ntime.sleep(0.4)\nprint(input())"), {"tests": tests})
    verdicts = result.details["verdicts"]
    assert 2 <= verdicts.count("passed") <= 4 and verdicts[-1] == "time_limit", verdicts
    assert result.details["wall_s"] < 4

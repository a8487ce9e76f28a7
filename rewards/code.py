"""`code`: the fraction of a sample's tests that the completion's program passes, run in the sandbox.

The program is the last fenced Python block of the answer (after `</think>`; a ```python block is preferred
to an untagged one). `sample["tests"]` (a dict or its JSON text) holds the tests in one of three conventions.
APPS / LiveCodeBench `input_output`:
- stdin/stdout: `{"inputs": [str, …], "outputs": [str, …]}`; outputs compare line by line after
  stripping trailing whitespace (trailing blank lines ignored);
- call-based: `{"fn_name": "f", "inputs": [[arg, …], …], "outputs": [value, …]}`; the function may be a
  `class Solution` method; inputs may also be LiveCodeBench strings of one JSON value per line. The return
  value is serialised to JSON inside the sandbox and compared here as plain data (an object whose `__eq__`
  lies cannot pass: it does not survive serialisation). APPS' habit of wrapping outputs in a list is accepted.
HumanEval: `{"test_code": "def check(candidate): …", "entry_point": "f", "prompt_code": "def f(x):\n    …"}`:
  one test, passed when `check(f)` returns. The optional `prompt_code` (HumanEval's `prompt` field: imports,
  helpers, the signature and docstring) runs first: a completion that is only the function's body is appended
  to it (as HumanEval's own harness does), and a whole program runs after it, so it may rely on its imports.
MBPP: `{"asserts": ["assert f(1) == 2", …], "test_imports": ["import math"], "setup_code": "…"}`: one test
  per assert. The optional imports run before the program (which may rely on them) and before each assert;
  the optional setup code runs before each assert, in the tests' namespace.
Assert-based tests run in the program's own process (as HumanEval's and MBPP's harnesses do), so the harness
guards them (sandbox_harness.run_asserts): a test passes only if it ran to its end, the program's functions
must return plain data (an object whose `__eq__` lies fails), and a program's rebinding of builtins, of the
imported modules or of the prompt's helpers does not reach the tests.
Optional per-sample `time_limit_s` and `memory_limit_mb` are honoured up to the configured maxima.

`details["verdicts"]` holds one of: passed, wrong_answer (for asserts: an AssertionError), time_limit,
memory_limit, runtime_error, output_limit, sandbox_error. Tests left unrun count as time_limit: they follow
two time-outs, or the program used up `max_total_s` (so a sample stays well inside the reward pool's deadline).
"""

from __future__ import annotations

import json
import keyword
import math
import re
import signal
from collections import Counter
from typing import Any, Mapping

from rewards.base import RewardResult, as_text, failure
from rewards.isolation.sandbox import Limits, Sandbox, SandboxRun
from rewards.isolation.sandbox_harness import output_digest

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.S)
_PYTHON_TAGS = {"python", "python3", "py", "py3"}
MAX_SOURCE_CHARS = 256 << 10
MAX_INPUT_BYTES = 64 << 20


class CodeReward:
    """Fraction of tests passed by the last Python code block, run in a sandbox (bubblewrap or unshare)."""

    def __init__(
        self,
        all_or_nothing: bool = False,
        time_limit_s: float = 2.0,
        memory_limit_mb: int = 512,
        max_time_limit_s: float = 10.0,
        max_memory_limit_mb: int = 2048,
        max_tests: int = 64,
        max_total_s: float = 30.0,
        backend: str = "auto",
        python: str | None = None,
        warm: bool = True,
    ) -> None:
        self.all_or_nothing = all_or_nothing
        self.defaults = Limits(time_limit_s=time_limit_s, memory_limit_mb=memory_limit_mb, budget_s=max_total_s)
        self.max_time_limit_s = max_time_limit_s
        self.max_memory_limit_mb = max_memory_limit_mb
        self.max_tests = max_tests
        self.sandbox = Sandbox(backend=backend, python=python, warm=warm)  # warm: one sandbox for many programs

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        source = extract_code(as_text(completion))
        if source is None:
            return failure("no_code", "No fenced Python code block was found in the answer.")
        if len(source) > MAX_SOURCE_CHARS:
            return failure("parse_error", f"The program is over {MAX_SOURCE_CHARS} characters long.")
        try:
            tests = parse_tests(sample.get("tests"))
        except ValueError as exc:
            return failure("no_gold", str(exc))
        inputs, outputs = tests["inputs"][: self.max_tests], tests["outputs"][: self.max_tests]
        if sum(len(json.dumps(x)) for x in [*inputs, tests.get("context")]) > MAX_INPUT_BYTES:
            return failure("no_gold", f"The test inputs exceed {MAX_INPUT_BYTES >> 20} MB.")
        context = tests.get("context")
        if context is not None:
            source, context = with_prompt(source, context)
        limits = self._limits(sample)
        run = self.sandbox.run(source, inputs, mode=tests["mode"], fn_name=tests.get("fn_name"), limits=limits,
                               context=context)
        verdicts = [verdict(run, i, expected, tests["mode"], limits) for i, expected in enumerate(outputs)]
        passed = verdicts.count("passed")
        score = float(passed == len(verdicts)) if self.all_or_nothing else passed / len(verdicts)
        details: dict[str, Any] = {
            "passed": passed, "tests": len(verdicts), "verdicts": verdicts, "counts": dict(Counter(verdicts)),
            "backend": self.sandbox.backend, "wall_s": round(run.wall_s, 3),
        }
        if len(tests["inputs"]) > self.max_tests:
            details["tests_dropped"] = len(tests["inputs"]) - self.max_tests
        if run.error:
            details["sandbox_message"] = run.error
        first_bad = next((i for i, v in enumerate(verdicts) if v != "passed"), None)
        if first_bad is not None and first_bad < len(run.records):
            details["first_failure_stdout"] = run.records[first_bad].get("stdout_head", "")
            details["first_failure_stderr"] = run.records[first_bad].get("stderr_tail", "")[-500:]
        return RewardResult(score, details)

    def close(self) -> None:
        self.sandbox.close()

    def _limits(self, sample: Mapping[str, Any]) -> Limits:
        d = self.defaults
        limits = Limits(time_limit_s=d.time_limit_s, memory_limit_mb=d.memory_limit_mb, budget_s=d.budget_s)
        t, m = sample.get("time_limit_s"), sample.get("memory_limit_mb")
        if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0:
            limits.time_limit_s = min(float(t), self.max_time_limit_s)
        if isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0:
            limits.memory_limit_mb = int(min(m, self.max_memory_limit_mb))
        return limits


def extract_code(completion: str) -> str | None:
    """The last ```python block of the answer (else the last untagged block); None without one."""
    if "</think>" in completion:
        completion = completion.rsplit("</think>", 1)[1]
    elif "<think>" in completion:
        return None  # still reasoning: there is no answer yet
    blocks = _FENCE_RE.findall(completion)
    tagged = [body for tag, body in blocks if tag.lower() in _PYTHON_TAGS]
    untagged = [body for tag, body in blocks if not tag]
    chosen = tagged or untagged
    if chosen:
        return chosen[-1]
    m = re.search(r"```[ \t]*(?:python3?|py)[^\n]*\n(.*)$", completion, re.S | re.I)
    return m.group(1) if m else None  # an unterminated last block (generation cut off)


def parse_tests(raw: Any) -> dict[str, Any]:
    """Normalise tests to {mode, fn_name, inputs, outputs[, context]}; ValueError with a sentence."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"The sample's `tests` is text but not JSON: {exc}.") from exc
    if isinstance(raw, dict) and "test_code" in raw:
        return _humaneval_tests(raw)
    if isinstance(raw, dict) and "asserts" in raw:
        return _mbpp_tests(raw)
    if isinstance(raw, list):  # LiveCodeBench rows: [{"input": …, "output": …, "testtype": …}]
        raw = {"inputs": [t.get("input") for t in raw if isinstance(t, dict)],
               "outputs": [t.get("output") for t in raw if isinstance(t, dict)]}
    if not isinstance(raw, dict) or not isinstance(raw.get("inputs"), list) or not isinstance(raw.get("outputs"), list):
        raise ValueError("The sample needs `tests` with lists `inputs` and `outputs` (APPS input_output convention), "
                         "`test_code` and `entry_point` (HumanEval) or `asserts` (MBPP).")
    inputs, outputs = raw["inputs"], raw["outputs"]
    if len(inputs) != len(outputs) or not inputs:
        raise ValueError(f"`tests` has {len(inputs)} inputs and {len(outputs)} outputs; they must match and be non-empty.")
    fn_name = raw.get("fn_name")
    if fn_name:
        return {"mode": "call", "fn_name": str(fn_name), "inputs": [_call_args(x) for x in inputs],
                "outputs": [_json_value(y) for y in outputs]}
    return {"mode": "stdio", "fn_name": None, "inputs": [_text(x) for x in inputs], "outputs": [_text(y) for y in outputs]}


def _humaneval_tests(raw: dict[str, Any]) -> dict[str, Any]:
    test_code, entry, prompt = raw.get("test_code"), raw.get("entry_point"), raw.get("prompt_code")
    if not isinstance(test_code, str) or not test_code.strip():
        raise ValueError("HumanEval `tests` need `test_code`: the text that defines check(candidate).")
    if not isinstance(entry, str) or not entry.isidentifier() or keyword.iskeyword(entry):
        raise ValueError(f"HumanEval `tests` need `entry_point`, the name of the function to check, not {entry!r}.")
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError("HumanEval `tests.prompt_code` must be text (the problem's `prompt` field).")
    return {"mode": "assert", "fn_name": None, "inputs": [{"code": test_code, "check": entry}], "outputs": [None],
            "context": {"prompt_code": prompt or ""}}


def _mbpp_tests(raw: dict[str, Any]) -> dict[str, Any]:
    asserts, setup, imports = raw.get("asserts"), raw.get("setup_code") or "", raw.get("test_imports") or []
    if not isinstance(asserts, list) or not asserts or not all(isinstance(a, str) and a.strip() for a in asserts):
        raise ValueError("MBPP `tests.asserts` must be a non-empty list of assert statements (text).")
    if isinstance(imports, str):
        imports = [imports]
    if not isinstance(setup, str) or not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise ValueError("MBPP `tests.setup_code` must be text and `tests.test_imports` a list of import lines.")
    return {"mode": "assert", "fn_name": None, "inputs": [{"code": a, "check": None} for a in asserts],
            "outputs": [None] * len(asserts), "context": {"imports": "\n".join(imports), "setup": setup}}


def with_prompt(source: str, context: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The program to run and the harness's context: a completion that is only a function body continues the
    prompt's code (one program, as HumanEval's harness builds it); a whole program runs after the prompt."""
    prompt = context.get("prompt_code") or ""
    if not prompt:
        return source, context
    first = next((line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
    if first[:1] in (" ", "\t"):
        return (prompt if prompt.endswith("\n") else prompt + "\n") + source, {**context, "prompt_first": False}
    return source, {**context, "prompt_first": True}


def _text(value: Any) -> str:
    if isinstance(value, list):  # APPS sometimes stores a test's lines as a list
        return "\n".join(str(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value)


def _call_args(value: Any) -> list[Any]:
    if isinstance(value, str):  # LiveCodeBench: one JSON value per line
        return [json.loads(line) for line in value.split("\n") if line.strip()]
    return value if isinstance(value, list) else [value]


def _json_value(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def verdict(run: SandboxRun, i: int, expected: Any, mode: str, limits: Limits) -> str:
    if i >= len(run.records):
        return "sandbox_error"
    r = run.records[i]
    if r.get("skipped") or r.get("timed_out") or r.get("signal") == signal.SIGXCPU:
        return "time_limit"
    stderr = r.get("stderr_tail", "")
    over = r.get("stdout_bytes", 0) > limits.output_limit_bytes or r.get("result_bytes", 0) > limits.result_limit_bytes
    if over or "File too large" in stderr:
        return "output_limit"
    if "MemoryError" in stderr or (r.get("signal") == signal.SIGKILL and run.memory_exhausted):
        return "memory_limit"
    if mode == "assert":  # passed only when the test ran to its end and wrote the harness's token
        if r.get("completed") is True and r.get("exit_code") == 0 and r.get("signal") is None:
            return "passed"
        return "wrong_answer" if stderr.rstrip().rsplit("\n", 1)[-1].startswith("AssertionError") else "runtime_error"
    if r.get("exit_code") != 0 or r.get("signal") is not None:
        return "runtime_error"
    if mode == "stdio":
        return "passed" if r.get("stdout_sha256") == output_digest(expected) else "wrong_answer"
    try:
        got = json.loads(r.get("result") or "null")
    except (ValueError, RecursionError):
        return "wrong_answer"
    ok = same(got, expected) or (isinstance(expected, list) and len(expected) == 1 and same(got, expected[0]))
    return "passed" if ok else "wrong_answer"


def same(a: Any, b: Any, depth: int = 0) -> bool:
    """Plain-data equality: bools are not numbers, floats agree to 1e-9, containers element-wise."""
    if depth > 200:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if a == b:
            return True
        try:  # only floats get a tolerance; huge ints must not be squeezed into floats
            return (isinstance(a, float) or isinstance(b, float)) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
        except OverflowError:
            return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, depth + 1) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], depth + 1) for k in a)
    return type(a) is type(b) and a == b

"""Synthetic code task: short Python functions and programs written from a one-line spec, graded by tests.

R1's reasoning RL scores code by running it against tests; these are such problems at a size a model of a
million parameters with a 512-entry tokenizer can learn. Each spec is one sentence, e.g. "Write a Python
function calc(a, b) that returns a + b * 3." or "Write a Python program that reads a word s and prints s
reversed.", and each solution is two or three regular lines:

    def calc(a, b):              a, b = map(int, input().split())      s = input()
        return a + b * 3         print(a + b * 3)                      print(s[::-1])

Three kinds (``arith``: integer arguments and an expression, literal or in words such as "the sum of a and b";
``string``: one word; ``list``: a list of integers) with the function's name, its argument names and the
constants drawn per row, so a model must read the spec rather than recall one answer.

Every row carries ``tests`` in one of the conventions the ``code`` reward accepts (rewards/code.py), chosen per
row among ``conventions``: ``stdio`` (APPS inputs/outputs; the program form of the spec), ``call``
(APPS ``fn_name``), ``assert`` (MBPP's list of asserts) or ``check`` (HumanEval's ``check(candidate)`` and
``entry_point``). The three function conventions share one prompt form; they differ only in how the
sandbox runs the tests, and in cost: each test of the first three is a process of its own, while ``check``
runs all its asserts in one (benchmarks/code_reward_step.py). A row's ``cases`` test inputs are drawn until
their expected outputs are not all equal, so a program that ignores its input fails.

Responses use the template of the other tasks: a short plan in the think block, then the program in a
```python block inside the answer, where the code reward's extractor finds it (``worked`` < 1 leaves that share
of the think blocks empty). Every row also holds ``solution``, the reference program (like ``answer`` on math
rows: for checks and benchmarks, never shown to the policy). Splits are drawn by synthetic.draw_split, with
sft and rl cut apart by hash, as for the general task.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from typing import Any, Callable

from orchestrator.data.general import WORDS
from orchestrator.data.synthetic import draw_split, prompt_unit

KINDS = ("arith", "string", "list")
CONVENTIONS = ("stdio", "call", "assert", "check")
NAMES = ("f", "g", "h", "calc", "solve", "compute", "combine", "transform", "answer", "result", "apply", "work",
         "make", "get", "find", "run", "step", "change", "convert", "process")
INT_ARGS = (("a", "b", "c"), ("x", "y", "z"), ("m", "n", "p"))
STR_ARGS = ("s", "word", "text")
LIST_ARGS = ("xs", "nums", "values", "data")
_OPS = ("+", "-", "*")


@dataclass(frozen=True, slots=True)
class Spec:
    """One problem before its tests: what the solution computes from its arguments."""

    kind: str
    args: tuple[str, ...]
    arg_type: str
    """"int", "str" or "list": how test inputs are drawn and how a program reads them."""
    phrase: str
    """What the function returns (the program prints), as the prompt says it."""
    expr: str
    """The same as a Python expression of ``args``."""
    note: str = ""
    """A plan line for the think block when the phrase is in words (how the words become the expression)."""
    gives_list: bool = False
    """The value is a list: a program prints its items separated by spaces."""


def _arith(rng: random.Random) -> Spec:
    names = rng.choice(INT_ARGS)
    if rng.random() < 0.6:  # literal: the spec gives the expression itself
        n = rng.randint(1, 3)
        terms = list(names[:n])
        if n == 1 or rng.random() < 0.6:
            terms.insert(rng.randint(0, len(terms)), str(rng.randint(2, 9)))
        expr = terms[0] + "".join(f" {rng.choice(_OPS)} {t}" for t in terms[1:])
        return Spec("arith", names[:n], "int", expr, expr)
    a, b, c = names
    k = rng.randint(2, 9)
    phrase, expr, n = rng.choice([
        (f"the sum of {a} and {b}", f"{a} + {b}", 2), (f"the product of {a} and {b}", f"{a} * {b}", 2),
        (f"{a} minus {b}", f"{a} - {b}", 2), (f"{k} times {a}", f"{k} * {a}", 1), (f"{a} plus {k}", f"{a} + {k}", 1),
        (f"the sum of {a}, {b} and {c}", f"{a} + {b} + {c}", 3), (f"{a} times {b} plus {c}", f"{a} * {b} + {c}", 3),
        (f"twice {a} plus {b}", f"2 * {a} + {b}", 2), (f"the square of {a}", f"{a} * {a}", 1),
        (f"the larger of {a} and {b}", f"max({a}, {b})", 2), (f"the smaller of {a} and {b}", f"min({a}, {b})", 2),
        (f"the distance between {a} and {b}", f"abs({a} - {b})", 2),
    ])
    return Spec("arith", names[:n], "int", phrase, expr, f"{phrase} is {expr}")


_LETTERS = "aeilnorst"
_SUFFIXES = ("!", "?", "s", "ed", "ing", "er")


def _string(rng: random.Random) -> Spec:
    s = rng.choice(STR_ARGS)
    k, (c, d) = rng.randint(2, 4), rng.sample(_LETTERS, 2)
    suffix = rng.choice(_SUFFIXES)
    phrase, expr = rng.choice([
        (f"{s} reversed", f"{s}[::-1]"), (f"{s} in capital letters", f"{s}.upper()"),
        (f"the length of {s}", f"len({s})"), (f"{s} repeated {k} times", f"{s} * {k}"),
        (f"the first {k} letters of {s}", f"{s}[:{k}]"), (f"the last {k} letters of {s}", f"{s}[-{k}:]"),
        (f"how many times the letter {c} appears in {s}", f"{s}.count('{c}')"),
        (f"{s} followed by '{suffix}'", f"{s} + '{suffix}'"),
        (f"{s} with every {c} replaced by {d}", f"{s}.replace('{c}', '{d}')"),
    ])
    return Spec("string", (s,), "str", phrase, expr, f"{phrase} is {expr}")


def _list(rng: random.Random) -> Spec:
    xs, k = rng.choice(LIST_ARGS), rng.randint(2, 9)
    phrase, expr = rng.choice([
        (f"the sum of {xs}", f"sum({xs})"), (f"the largest item of {xs}", f"max({xs})"),
        (f"the smallest item of {xs}", f"min({xs})"), (f"the number of items in {xs}", f"len({xs})"),
        (f"{xs} with every item times {k}", f"[x * {k} for x in {xs}]"),
        (f"{xs} with {k} added to every item", f"[x + {k} for x in {xs}]"),
        (f"the items of {xs} greater than {k}", f"[x for x in {xs} if x > {k}]"),
        (f"how many items of {xs} are greater than {k}", f"len([x for x in {xs} if x > {k}])"),
        (f"the even items of {xs}", f"[x for x in {xs} if x % 2 == 0]"),
        (f"{xs} sorted from small to large", f"sorted({xs})"), (f"{xs} in reverse order", f"{xs}[::-1]"),
        (f"the sum of the items of {xs} greater than {k}", f"sum(x for x in {xs} if x > {k})"),
    ])
    gives_list = expr.startswith(("[", "sorted(")) or expr.endswith("[::-1]")
    return Spec("list", (xs,), "list", phrase, expr, f"{phrase} is {expr}", gives_list)


_MAKERS: dict[str, Callable[[random.Random], Spec]] = {"arith": _arith, "string": _string, "list": _list}


def _draw_args(rng: random.Random, spec: Spec) -> list[Any]:
    if spec.arg_type == "int":
        return [rng.randint(0, 20) for _ in spec.args]
    if spec.arg_type == "str":
        return [rng.choice(WORDS)]
    return [[rng.randint(0, 20) for _ in range(rng.randint(3, 6))]]


_BUILTINS = {"__builtins__": {"max": max, "min": min, "abs": abs, "len": len, "sum": sum, "sorted": sorted}}


@functools.lru_cache(maxsize=4096)
def _compiled(expr: str):
    return compile(expr, "<spec>", "eval")


def _value(spec: Spec, args: list[Any]) -> Any:
    # The expression is one of ours (built above from fixed templates), never model output.
    return eval(_compiled(spec.expr), _BUILTINS, dict(zip(spec.args, args)))


def _stdin(spec: Spec, args: list[Any]) -> str:
    if spec.arg_type == "list":
        return " ".join(map(str, args[0])) + "\n"
    return " ".join(map(str, args)) + "\n"


def _stdout(value: Any) -> str:
    return (" ".join(map(str, value)) if isinstance(value, list) else str(value)) + "\n"


_READS = {"int": {1: "an integer {0}", 2: "two integers {0} and {1} on one line",
                  3: "three integers {0}, {1} and {2} on one line"},
          "str": {1: "a word {0}"}, "list": {1: "a line of integers {0}"}}


def _program(spec: Spec) -> tuple[str, str, str]:
    """The stdio form: prompt, plan and program."""
    what = _READS[spec.arg_type][len(spec.args)].format(*spec.args)
    spaced = " (items separated by spaces)" if spec.gives_list else ""
    prompt = f"Write a Python program that reads {what} and prints {spec.phrase}{spaced}."
    if spec.arg_type == "int":
        read = f"{spec.args[0]} = int(input())" if len(spec.args) == 1 else \
            f"{', '.join(spec.args)} = map(int, input().split())"
    elif spec.arg_type == "str":
        read = f"{spec.args[0]} = input()"
    else:
        read = f"{spec.args[0]} = list(map(int, input().split()))"
    show = f"print(*{spec.expr})" if spec.gives_list else f"print({spec.expr})"
    plan = [f"read {what}"] + ([spec.note] if spec.note else []) + [f"print {spec.expr}"]
    return prompt, "\n".join(plan), f"{read}\n{show}"


def _function(spec: Spec, name: str) -> tuple[str, str, str]:
    sig = f"{name}({', '.join(spec.args)})"
    prompt = f"Write a Python function {sig} that returns {spec.phrase}."
    plan = ([spec.note] if spec.note else []) + [f"{name} returns {spec.expr}"]
    return prompt, "\n".join(plan), f"def {sig}:\n    return {spec.expr}"


def _tests(convention: str, spec: Spec, name: str, cases: list[list[Any]], values: list[Any]) -> dict[str, Any]:
    if convention == "stdio":
        return {"inputs": [_stdin(spec, args) for args in cases], "outputs": [_stdout(v) for v in values]}
    if convention == "call":
        return {"fn_name": name, "inputs": cases, "outputs": values}
    calls = [f"{name}({', '.join(map(repr, args))}) == {v!r}" for args, v in zip(cases, values)]
    if convention == "assert":
        return {"asserts": [f"assert {c}" for c in calls]}
    body = "".join(f"    assert {c.replace(name + '(', 'candidate(', 1)}\n" for c in calls)
    return {"test_code": f"def check(candidate):\n{body}", "entry_point": name}


@dataclass(frozen=True, slots=True)
class CodeTask:
    """A problem as the policy sees it (``prompt``) with its reference plan and program; ``tests`` come later."""

    spec: Spec
    convention: str
    name: str
    prompt: str
    thought: str
    solution: str

    def response(self, worked: bool = True) -> str:
        thought = f"\n{self.thought}\n" if worked else "\n"
        return f"<think>{thought}</think>\n<answer>\n```python\n{self.solution}\n```\n</answer>"

    def tests(self, rng: random.Random, cases: int) -> dict[str, Any]:
        """``cases`` tests in this task's convention, on inputs whose outputs are not all equal (so that a
        program ignoring its input fails)."""
        for _ in range(50):
            inputs = [_draw_args(rng, self.spec) for _ in range(cases)]
            values = [_value(self.spec, a) for a in inputs]
            if cases == 1 or len({json.dumps(v) for v in values}) > 1:
                break
        return _tests(self.convention, self.spec, self.name, inputs, values)


def generate_task(rng: random.Random, kinds: tuple[str, ...] = KINDS,
                  conventions: tuple[str, ...] = CONVENTIONS) -> CodeTask:
    spec = _MAKERS[rng.choice(kinds)](rng)
    convention, name = rng.choice(conventions), rng.choice(NAMES)
    prompt, thought, solution = _program(spec) if convention == "stdio" else _function(spec, name)
    return CodeTask(spec, convention, name, prompt, thought, solution)


def make_code_split(split: str, size: int, seed: int = 0, kinds: tuple[str, ...] = KINDS,
                    conventions: tuple[str, ...] = CONVENTIONS, cases: int = 3, worked: float = 1.0) -> list[dict]:
    """Rows of one split: ``id``, ``prompt``, ``domain`` ("code"), ``kind``, ``convention``, ``tests``,
    ``solution``, and for ``sft`` the reference ``response``; ``worked``: the share of those that state a plan
    (the others leave the think block empty; which rows, by a hash of the prompt)."""
    for what, given, known in (("kinds", kinds, KINDS), ("conventions", conventions, CONVENTIONS)):
        unknown = sorted(set(given) - set(known))
        if unknown or not given:
            raise ValueError(f"Unknown code task {what} {unknown or '(none given)'}; choose from {', '.join(known)}.")
    if cases < 1:
        raise ValueError(f"A code problem needs at least one test case, not {cases}.")
    tasks: dict[str, CodeTask] = {}

    def draw(rng: random.Random) -> dict:
        task = generate_task(rng, kinds, conventions)
        tasks[task.prompt] = task
        return {"prompt": task.prompt}

    def complete(row: dict, rng: random.Random) -> dict:  # only for accepted prompts: tests cost the most
        task = tasks.pop(row["prompt"])
        tasks.clear()
        return {"prompt": task.prompt, "domain": "code", "kind": task.spec.kind, "convention": task.convention,
                "tests": task.tests(rng, cases), "solution": task.solution,
                "response": task.response(worked=prompt_unit(task.prompt, "worked") < worked)}

    return draw_split(split, size, seed, draw, f"the code kinds {', '.join(kinds)} with {', '.join(conventions)}",
                      disjoint_training=True, complete=complete)

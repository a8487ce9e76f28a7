r"""Our `math` reward on Math-Verify's own test suite: the gold/prediction pairs and labels of its tests/.

The cases are read from a copy of https://github.com/huggingface/Math-Verify, never vendored here:

    git clone https://github.com/huggingface/Math-Verify /tmp/Math-Verify       # a work tree, or
    git clone --bare https://github.com/huggingface/Math-Verify /tmp/mv.git     # a bare git directory
    PYTHONPATH=. python benchmarks/math_verify_suite.py /tmp/Math-Verify [--rev HEAD] [--verbose]

Measured against commit 5d148cf (July 2025, the repository's v0.8.0 test suite; the installed package is
0.9.0). Extraction reads each tests/test_*.py with `ast` and runs none of it: every test function whose body
calls `compare_strings(gold, pred, …)` or `verify(parse(gold), parse(pred))` gives one case per row of its
`@pytest.mark.parametrize` table (or one case for a call with literal arguments, as in `test_precision`),
with the options that call passes (`match_types`, `precision`, `strict`, `allow_set_relation_comp`).
Commented-out rows are not cases. Tests of other things (string extraction, configs, timeouts) are skipped.

Math-Verify grades each case with that case's options (as the test file's own `compare_strings` helper
does), and again with the common options; our reward has one behaviour, so it is graded on the pair alone:
`MathReward()(pred, {"answer": gold})`. Reported: agreement with all labels, and with the labels that hold
under the common options (a label math-verify itself only reaches with a test's non-default option records
that option, e.g. `f(x)` = `f(y)` under strict=False next to `f(x)` != `f(y)` under strict=True; no grader
with one behaviour can match both). Every case either grader misses is listed.
"""

from __future__ import annotations

import argparse
import ast
import logging
import math
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewards.math import MathReward

_COMPARE_OPTIONS = ("match_types", "precision", "strict", "allow_set_relation_comp")
COMMON: dict[str, Any] = {"match_types": ["latex", "expr"], "precision": 6, "strict": True,
                          "allow_set_relation_comp": False}
"""The suite helper's defaults, which most tests use."""


@dataclass(slots=True)
class Case:
    id: str
    """file::test[row]"""
    gold: str
    pred: str
    expected: int
    options: dict[str, Any] = field(default_factory=dict)
    """compare_strings keywords; empty with `plain` for a bare verify(parse(gold), parse(pred))."""
    plain: bool = False


def read_test_files(repo: Path, rev: str) -> dict[str, str]:
    """tests/test_*.py of a work tree or of a (bare) git directory, by file name."""
    if (repo / "tests").is_dir():
        return {p.name: p.read_text() for p in sorted((repo / "tests").glob("test_*.py"))}
    git = ["git", f"--git-dir={repo}"]
    names = subprocess.run([*git, "ls-tree", "--name-only", rev, "tests/"], check=True,
                           capture_output=True, text=True).stdout.split()
    return {Path(n).name: subprocess.run([*git, "show", f"{rev}:{n}"], check=True, capture_output=True,
                                         text=True).stdout
            for n in names if Path(n).name.startswith("test_") and n.endswith(".py")}


def _value(node: ast.expr) -> Any:
    # One test builds its gold with an f-string over `math` (f"{math.sqrt(17):.15f}"); that, and only that,
    # is evaluated, with no builtins and nothing but the math module in scope.
    try:
        return ast.literal_eval(node)
    except ValueError:
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        if isinstance(node, ast.JoinedStr) and names <= {"math"}:
            return eval(compile(ast.Expression(node), "<case>", "eval"), {"__builtins__": {}, "math": math})
        raise


def _comparisons(func: ast.FunctionDef) -> Iterator[tuple[ast.Call, bool]]:
    """(call, plain) for each grading call in a test body; plain: a bare verify(parse(gold), parse(pred))."""
    for node in ast.walk(func):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        if node.func.id == "compare_strings":
            yield node, False
        elif node.func.id == "verify" and len(node.args) >= 2 and all(
            isinstance(a, ast.Call) and getattr(a.func, "id", "") == "parse" for a in node.args[:2]
        ):
            yield node, True


def _literal_expected(func: ast.FunctionDef, call: ast.Call) -> int | None:
    for node in ast.walk(func):
        if isinstance(node, ast.Compare) and node.left is call and isinstance(node.comparators[0], ast.Constant):
            return int(node.comparators[0].value)
    return None


def _parametrize(func: ast.FunctionDef) -> tuple[list[str], list[tuple[Any, ...]]] | None:
    for deco in func.decorator_list:
        if isinstance(deco, ast.Call) and ast.unparse(deco.func).endswith("parametrize"):
            names = [n.strip() for n in _value(deco.args[0]).split(",")]
            rows = [tuple(_value(e) for e in row.elts) for row in deco.args[1].elts]
            return names, rows
    return None


def _bind(arg: ast.expr, row: dict[str, Any]) -> Any:
    return row[arg.id] if isinstance(arg, ast.Name) and arg.id in row else _value(arg)


def cases_from_source(file_name: str, source: str) -> list[Case]:
    out: list[Case] = []
    for func in ast.parse(source).body:
        if not isinstance(func, ast.FunctionDef) or not func.name.startswith("test"):
            continue
        calls = list(_comparisons(func))
        table = _parametrize(func) if calls else None  # other tests' tables hold config objects
        for call, plain in calls:
            gold_arg, pred_arg = (call.args[0].args[0], call.args[1].args[0]) if plain else call.args[:2]
            options = {k.arg: k.value for k in call.keywords if k.arg in _COMPARE_OPTIONS}
            rows = [dict(zip(table[0], r)) for r in table[1]] if table else [{}]
            for i, row in enumerate(rows):
                expected = row.get("expected", row.get("result")) if table else _literal_expected(func, call)
                if expected is None:
                    continue
                case_id = f"{file_name}::{func.name}[{i}]"
                out.append(Case(case_id, _bind(gold_arg, row), _bind(pred_arg, row), int(expected),
                                {k: _bind(v, row) for k, v in options.items()}, plain))
    return out


def math_verify_grade(case: Case, options: dict[str, Any] | None = None) -> int:
    """As the suite's `compare_strings` helper (LaTeX with boxed priority 0, then plain expressions)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if case.plain:
        return int(verify(parse(case.gold), parse(case.pred)))
    opts = case.options if options is None else options
    targets = [LatexExtractionConfig(boxed_match_priority=0) if t == "latex" else ExprExtractionConfig()
               for t in opts.get("match_types", COMMON["match_types"])]
    return int(verify(parse(case.gold, targets), parse(case.pred, targets),
                      float_rounding=opts.get("precision", COMMON["precision"]),
                      strict=opts.get("strict", COMMON["strict"]),
                      allow_set_relation_comp=opts.get("allow_set_relation_comp", COMMON["allow_set_relation_comp"])))


def _timed(grade: Callable[[Case], int], cases: list[Case]) -> tuple[list[int], float]:
    start = time.perf_counter()
    return [grade(c) for c in cases], time.perf_counter() - start


def _row(name: str, scores: list[int], cases: list[Case], common: list[bool], seconds: float) -> str:
    ok = [s == c.expected for s, c in zip(scores, cases)]
    n_all, n_common = len(cases), sum(common)
    hit_all, hit_common = sum(ok), sum(o for o, k in zip(ok, common) if k)
    return (f"| {name} | {hit_all}/{n_all} ({100 * hit_all / n_all:.1f}%) | "
            f"{hit_common}/{n_common} ({100 * hit_common / n_common:.1f}%) | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="a Math-Verify work tree or git directory")
    parser.add_argument("--rev", default="HEAD", help="revision to read from a git directory")
    parser.add_argument("--timeout-s", type=float, default=5.0)
    parser.add_argument("--verbose", action="store_true", help="print gold and prediction of each failure")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # Math-Verify logs every failed parse

    cases = [c for name, src in read_test_files(args.repo, args.rev).items() for c in cases_from_source(name, src)]
    reward = MathReward(timeout_s=args.timeout_s)
    ours, ours_s = _timed(lambda c: int(reward(c.pred, {"answer": c.gold}).score), cases)
    reward.close()
    theirs, theirs_s = _timed(math_verify_grade, cases)
    # The same pairs with the common options: where math-verify then misses the label, the label records what
    # a non-default option does (latex-only extraction, precision 2, strict=False, ...), not the pairs' math.
    plain, plain_s = _timed(lambda c: math_verify_grade(c, {}), cases)
    common = [p == c.expected for p, c in zip(plain, cases)]

    print(f"cases: {len(cases)} from {len({c.id.split('::')[0] for c in cases})} test files; "
          f"{sum(common)} have labels that hold with the common options {COMMON}\n")
    print("| grader | all labels | labels that hold with the common options | seconds |")
    print("|---|---|---|---:|")
    print(_row("r1ray math", ours, cases, common, ours_s))
    print(_row("math-verify 0.9.0, each test's options", theirs, cases, common, theirs_s))
    print(_row("math-verify 0.9.0, common options", plain, cases, common, plain_s))
    print("\nmisses (id, label, ours, math-verify with the test's options, the options; * = option-dependent label):")
    for case, o, t, k in zip(cases, ours, theirs, common):
        if o != case.expected or t != case.expected:
            opts = {key: v for key, v in case.options.items() if COMMON.get(key) != v}
            print(f"  {'' if k else '*'}{case.id}  label={case.expected}  ours={o}  mv={t}  {opts or ''}")
            if args.verbose:
                print(f"      gold: {case.gold[-160:]!r}\n      pred: {case.pred[-160:]!r}")


if __name__ == "__main__":
    main()

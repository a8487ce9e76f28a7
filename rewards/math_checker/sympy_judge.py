r"""The sympy judge: runs inside the bounded child process (rewards/isolation/bounded.py), never in the caller.

LaTeX → sympy: `latex2sympy2_extended` (MIT, maintained by Hugging Face for Math-Verify). Chosen over
sympy's own `parse_latex` because sympy's ANTLR backend pins one exact `antlr4-python3-runtime` version
(4.11) and its Lark backend rejects common answer forms (`3\pi`, `\pi r^2`, `e^{i\pi}`, sets, intervals,
percentages); latex2sympy2_extended parses all of these, supports three ANTLR runtime versions, and is
about 5 ms per parse once warm. Only leaves reach it: structure is handled by math_parse/math_compare.

Comparison, in order:
1. plain numbers and text: exactly as `FastJudge` (same rule in and out of the child);
2. exact: `a == b`, then the difference evaluated to 50 digits (a fast, certain "different"), then
   `simplify(a - b) == 0`; a difference that sympy cannot simplify but that is zero to 40 digits counts as
   equal (nested radicals sympy cannot denest);
3. decimals: a plain decimal side uses the rounding rule of math_compare; decimals inside an expression are
   made exact (`0.5x` → `x/2`) and compared exactly;
4. expressions with symbols: the same free symbols, then `simplify`, then agreement at three rational points
   (points where either side is not real are skipped: `\frac{1}{\sqrt{n}}` is `\sqrt{\frac{1}{n}}` for the
   positive n an answer means);
5. equations: `lhs - rhs` proportional by a non-zero constant, or the same real solution set;
6. intervals, unions, inequalities and `\mathbb{R}`: sympy sets, equal when each minus the other is empty;
   `0 < f(x) < 1` is solved for f(x);
7. matrices: a matrix expression (`A + B`, `2A`, `AB`) is evaluated and compared entry by entry.

latex2sympy builds expressions unevaluated (`\sin(\pi)` stays `sin(pi)`, `15 + 2\sqrt{33}` keeps its order),
so each parsed leaf is evaluated with `doit()` first, as Math-Verify does, unless it holds a numeric power
tower or a huge exponent, which `doit()` would expand into a number too large to build, or a decimal,
which it would round to 15 digits before the decimal rule below can read it exactly.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import sympy
from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig
from latex2sympy2_extended.math_normalization import NormalizationConfig
from sympy.core.function import AppliedUndef

from rewards.math_checker.compare import FastJudge, Num, Undecided, equivalent, numbers_equal, plain_number
from rewards.math_checker.parse import Node

_NORMALIZE = NormalizationConfig(
    basic_latex=True, units=False, malformed_operators=True, nits=False, boxed="none", equations=False
)
_CONVERT = ConversionConfig(interpret_as_mixed_fractions=True, lowercase_symbols=False)
_EXACT_DIGITS = 50
_MAX_EXPONENT = 10_000
_PROBE_POINTS = ((sympy.Rational(3, 7), sympy.Rational(5, 11)), (sympy.Rational(13, 5),), (sympy.Rational(-7, 3),))


def to_sympy(text: str) -> Any:
    """Parse one LaTeX leaf; None when it does not parse. `i` is read as the imaginary unit."""
    try:
        value = latex2sympy(text, normalization_config=_NORMALIZE, conversion_config=_CONVERT)
    except Exception:
        return None
    if isinstance(value, sympy.Basic) and not isinstance(value, (sympy.Set, sympy.logic.boolalg.Boolean)):
        value = value.subs(sympy.Symbol("i"), sympy.I)
        if _tame(value) and not value.has(sympy.Float):  # decimals stay as written, for nsimplify
            try:
                value = value.doit()
            except Exception:
                pass
    return value


def _tame(value: Any) -> bool:
    """False when `doit()` could try to build an enormous integer: `10^{10^{10}}`, `2^{100000}`, `100000!`."""
    for node in sympy.preorder_traversal(value):
        numeric_power = isinstance(node, sympy.Pow) and node.base.is_number and node.exp.is_number
        if numeric_power and (node.exp.has(sympy.Pow, sympy.factorial)
                              or (node.exp.is_Integer and abs(node.exp) > _MAX_EXPONENT)):
            return False
        if isinstance(node, sympy.factorial) and node.args[0].is_Integer and node.args[0] > _MAX_EXPONENT:
            return False
    return True


class SympyJudge:
    def __init__(self) -> None:
        self.fast = FastJudge()

    def scalar(self, gold: Node, pred: Node) -> bool:
        try:
            return self.fast.scalar(gold, pred)
        except Undecided:
            pass
        a, b = to_sympy(gold.text), to_sympy(pred.text)
        if a is None or b is None or not isinstance(a, sympy.Expr) or not isinstance(b, sympy.Expr):
            return False
        return any(
            values_equal(x, y, gold.text, pred.text) for x in _variants(a, gold) for y in _variants(b, pred)
        )

    def equation(self, gold: Node, pred: Node) -> bool:
        g, p = _equation_expr(gold), _equation_expr(pred)
        if g is None or p is None:
            return False
        try:
            ratio = sympy.simplify(g / p)
            if ratio.is_number and ratio.is_finite and ratio != 0:
                return True
        except Exception:
            pass
        symbols = g.free_symbols | p.free_symbols
        if len(symbols) == 1:
            (x,) = symbols
            return sympy.solveset(g, x, sympy.S.Reals) == sympy.solveset(p, x, sympy.S.Reals)
        return False

    def matrix(self, gold: Node, pred: Node) -> bool:
        a, b = _to_matrix(gold), _to_matrix(pred)
        if a is None or b is None or a.shape != b.shape:
            return False
        return all(values_equal(x, y) for x, y in zip(a, b))

    def sets(self, gold: Node, pred: Node) -> bool:
        a, b = to_set(gold), to_set(pred)
        if a is None or b is None:
            return False
        if a == b:
            return True
        return sympy.Complement(a, b) == sympy.S.EmptySet and sympy.Complement(b, a) == sympy.S.EmptySet


def _to_matrix(node: Node) -> Any:
    """An explicit sympy Matrix for a parsed matrix or a matrix expression leaf; None otherwise."""
    if node.kind == "matrix":
        cells = [to_sympy(i.text) if i.kind == "expr" else None for i in node.items]
        if any(not isinstance(c, sympy.Expr) for c in cells):
            return None
        return sympy.Matrix(node.shape[0], node.shape[1], cells)
    value = to_sympy(node.text) if node.kind == "expr" else None
    if isinstance(value, sympy.MatrixExpr):
        value = value.as_explicit()
    return value if isinstance(value, sympy.MatrixBase) else None


def _variants(value: Any, node: Node) -> list[Any]:
    out = [value]
    if node.pct:
        out.append(value / 100)
    if node.deg:
        out.append(value * sympy.pi / 180)
    return out


def values_equal(a: Any, b: Any, a_text: str = "", b_text: str = "") -> bool:
    if a.has(sympy.zoo, sympy.nan) or b.has(sympy.zoo, sympy.nan):
        return False  # "12:00" parses as 12/0; undefined values are never an answer
    if a == b:
        return True
    a_num, b_num = plain_number(a_text), plain_number(b_text)
    if a.is_number and b.is_number and ((a_num and a_num.decimal) or (b_num and b_num.decimal)):
        return _decimal_equal(a, b, a_num, b_num)
    if a.has(sympy.Float) or b.has(sympy.Float):
        a, b = sympy.nsimplify(a, rational=True), sympy.nsimplify(b, rational=True)
        if a == b:
            return True
    if a.is_number and b.is_number:
        return _numbers_exactly_equal(a, b)
    return _expressions_equal(a, b)


def _decimal_equal(a: Any, b: Any, a_num: Num | None, b_num: Num | None) -> bool:
    def as_num(value: Any, num: Num | None) -> Num | None:
        if num is not None:
            return num
        approx = sympy.N(value, 40)
        if not approx.is_real:
            return None
        return Num(Fraction(str(approx)))

    x, y = as_num(a, a_num), as_num(b, b_num)
    return x is not None and y is not None and numbers_equal(x, y)


def _numbers_exactly_equal(a: Any, b: Any) -> bool:
    diff = a - b
    if diff.is_Rational:
        return diff == 0  # sympy already evaluated it exactly
    approx = sympy.N(diff, _EXACT_DIGITS)
    if not approx.is_finite:
        return False
    # Relative to the values themselves, so 1/2004! and 1/2006! stay different.
    scale = max(abs(sympy.N(a, _EXACT_DIGITS)), abs(sympy.N(b, _EXACT_DIGITS)))
    if scale == 0:
        return approx == 0
    if abs(approx) > scale * sympy.Float(10) ** -30:
        return False  # certainly different; skip simplify
    if sympy.simplify(diff) == 0:
        return True
    return abs(approx) < scale * sympy.Float(10) ** -40


def _expressions_equal(a: Any, b: Any) -> bool:
    diff = a - b
    if sympy.expand(diff) == 0 or sympy.simplify(diff) == 0:
        return True  # also when symbols cancel: sin^2 x + cos^2 x is 1
    if a.free_symbols != b.free_symbols:
        return False
    symbols = sorted(diff.free_symbols, key=str)
    agreed = 0
    for point in _PROBE_POINTS:
        values = {s: point[i % len(point)] + i for i, s in enumerate(symbols)}
        try:
            va, vb = sympy.N(a.subs(values), 30), sympy.N(b.subs(values), 30)
            v = va - vb
        except Exception:
            continue
        if not v.is_finite or va.is_real is False or vb.is_real is False:
            continue  # outside the domain an answer means (sqrt of a negative n)
        if abs(v) > sympy.Float(10) ** -20:
            return False
        agreed += 1
    return agreed >= 2


def _equation_expr(node: Node) -> Any:
    if node.kind != "eq" or not node.items or node.items[0].kind != "expr":
        return None
    lhs, rhs = to_sympy(node.text), to_sympy(node.items[0].text)
    if not isinstance(lhs, sympy.Expr) or not isinstance(rhs, sympy.Expr):
        return None
    return lhs - rhs


def to_set(node: Node) -> Any:
    """A sympy set for set-like answers; None when the node is not one."""
    if node.kind == "reals":
        return sympy.S.Reals
    if node.kind in ("interval", "pair"):
        lo, hi = (to_sympy(i.text) if i.kind == "expr" else None for i in node.items)
        if not isinstance(lo, sympy.Expr) or not isinstance(hi, sympy.Expr):
            return None
        left_closed, right_closed = node.closed if node.kind == "interval" else (False, False)
        return sympy.Interval(lo, hi, left_open=not left_closed, right_open=not right_closed)
    if node.kind in ("set", "list"):
        parts = [to_set(i) if i.kind not in ("expr", "text") else _point(i) for i in node.items]
        if any(p is None for p in parts):
            return None
        return sympy.Union(*parts) if parts else sympy.S.EmptySet
    if node.kind == "union":
        parts = [to_set(i) for i in node.items]
        return None if any(p is None for p in parts) else sympy.Union(*parts)
    if node.kind == "rel":
        return _inequality_set(node.text)
    if node.kind == "eq" and node.items:
        return to_set(node.items[0]) if node.items[0].kind != "expr" else _point(node.items[0])
    if node.kind == "expr":
        return _point(node)
    return None


def _point(node: Node) -> Any:
    value = to_sympy(node.text) if node.kind == "expr" else None
    return sympy.FiniteSet(value) if isinstance(value, sympy.Expr) else None


def _inequality_set(text: str) -> Any:
    rel = to_sympy(text)
    if isinstance(rel, sympy.And):
        parts = [_solve_relation(r) for r in rel.args]
        return None if any(p is None for p in parts) else sympy.Intersection(*parts)
    return _solve_relation(rel)


def _solve_relation(rel: Any) -> Any:
    if not isinstance(rel, sympy.core.relational.Relational):
        return None
    applied = rel.atoms(AppliedUndef)
    if len(applied) == 1:  # `0 < f(x) < 1` is a range for the value f(x)
        rel = rel.subs(applied.pop(), sympy.Symbol("_value"))
    if len(rel.free_symbols) != 1:
        return None
    (x,) = rel.free_symbols
    real = sympy.Symbol(x.name, real=True)
    return sympy.solve_univariate_inequality(rel.subs(x, real), real, relational=False)


def judge(gold: Node, pred: Node) -> bool:
    """Entry point for the bounded child."""
    return equivalent(gold, pred, SympyJudge())


def warm_up() -> None:
    """Parse and simplify once so forks of the helper start with sympy's caches and parser loaded."""
    judge(Node("expr", text=r"\frac{\sqrt{2}}{2}"), Node("expr", text=r"\frac{1}{\sqrt{2}}"))
    judge(Node("rel", text=r"x \le 1"), Node("interval", items=(Node("expr", text=r"-\infty"),
                                                                 Node("expr", text="1")), closed=(False, True)))

"""Structural equivalence of parsed answers, and the exact-number judge that needs no sympy.

`equivalent(gold, pred, judge)` walks two `Node` trees: sets and bare lists match as multisets (a repeat
counts only where the gold repeats), tuples and matrices element-wise, interval ends must agree (open vs closed
matters), a label is dropped (`x = 2`, `(p,q) = (3,2)`, `|AB| = 1`, `A:B = 7:32` match the bare value),
`x=1, y=2` matches `(1, 2)` or `y=2, x=1`, a gold tuple matches a set listing the same values in the same
order, and `a \\approx b` accepts either side. Leaves, equations and solution sets
go to a judge. `FastJudge` decides leaves that are plain numbers or text in microseconds and raises
`Undecided` for anything else, which the caller then sends to the sympy judge in a bounded process.

Numeric rule (documented for users in rewards/math.py): exact values compare exactly. Where a side is a
decimal, the values are equal when they agree to a relative 1e-9 (float noise), or when the decimal shows at
least 4 significant digits and the other value rounds to it at the decimal places shown (`0.3333` and
`\\frac13` are equal, `0.333` and `\\frac13` are not, `3.1416` and `\\pi` are equal, `3.14` and `\\pi` are not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from rewards.math_checker.parse import Node, is_label, label_key

LEAVES = {"expr", "text"}
SETLIKE = {"union", "rel", "reals"}
UNORDERED = {"set", "list"}
ORDERED = {"tuple", "pair", "list"}
MIN_ROUNDING_SIG_DIGITS = 4
_MAX_ITEMS = 64


class Undecided(Exception):
    """The judge cannot decide this comparison without sympy."""


class Judge(Protocol):
    def scalar(self, gold: Node, pred: Node) -> bool: ...
    def equation(self, gold: Node, pred: Node) -> bool: ...
    def sets(self, gold: Node, pred: Node) -> bool: ...
    def matrix(self, gold: Node, pred: Node) -> bool: ...


def equivalent(gold: Node, pred: Node, judge: Judge) -> bool:
    kinds = {gold.kind, pred.kind}
    if gold.kind not in LEAVES and node_key(gold) == node_key(pred):
        return True  # the same structure written the same way: `f(2) < f(1)` needs no solving
    if gold.kind == "alt":
        return any(equivalent(g, pred, judge) for g in gold.items)
    if pred.kind == "alt":
        return any(equivalent(gold, p, judge) for p in pred.items)
    if "eq" in kinds:
        return _equations(gold, pred, judge)
    if "assign" in kinds:
        return _assignments(gold, pred, judge)
    if kinds <= {"interval", "pair"} and "interval" in kinds:
        return _closed(gold) == _closed(pred) and _ordered(gold.items, pred.items, judge)
    if gold.kind in ("pair", "tuple") and pred.kind == "set" and _ordered(gold.items, pred.items, judge):
        # `{1,3}` for the pair (1,3), as Math-Verify reads a set against a tuple: in the order written. Not the
        # reverse: a predicted `(2, 3)` may be an open interval, which is not the gold set {2, 3}.
        return True
    if kinds & SETLIKE or "interval" in kinds or kinds == {"pair", "set"}:
        return judge.sets(gold, pred)
    if kinds <= LEAVES:
        return judge.scalar(gold, pred)
    if gold.kind == "set" and len(gold.items) == 1 and pred.kind in LEAVES:
        return equivalent(gold.items[0], pred, judge)
    if pred.kind == "set" and len(pred.items) == 1 and gold.kind in LEAVES:
        return equivalent(gold, pred.items[0], judge)
    if kinds <= UNORDERED:
        gold_items = _distinct(gold)
        # A list that repeats a value (a double root) must be matched with the repeat; otherwise a repeated
        # prediction is the same answer given twice.
        pred_items = _distinct(pred, force=len({node_key(i) for i in gold_items}) == len(gold_items))
        return _unordered(gold_items, pred_items, judge)
    if kinds <= ORDERED:
        return _ordered(gold.items, pred.items, judge)
    if "matrix" in kinds:
        return _matrices(gold, pred, judge)
    return False


def _closed(node: Node) -> tuple[bool, bool]:
    return node.closed if node.kind == "interval" else (False, False)


def node_key(node: Node) -> str:
    """A node's structure and text, spacing ignored: equal keys are the same answer written the same way."""
    inner = ",".join(node_key(i) for i in node.items)
    return f"{node.kind}:{node.text.replace(' ', '')}:{node.closed}:{node.shape}:{node.pct}{node.deg}[{inner}]"


def _distinct(node: Node, force: bool = False) -> tuple[Node, ...]:
    # A set written with a repeated element is still that set; a bare list keeps its multiplicity.
    if node.kind != "set" and not force:
        return node.items
    seen: dict[str, Node] = {}
    for item in node.items:
        seen.setdefault(node_key(item), item)
    return tuple(seen.values())


def _ordered(gold: tuple[Node, ...], pred: tuple[Node, ...], judge: Judge) -> bool:
    return len(gold) == len(pred) and all(equivalent(g, p, judge) for g, p in zip(gold, pred))


def _unordered(gold: tuple[Node, ...], pred: tuple[Node, ...], judge: Judge) -> bool:
    """Multiset match by augmenting paths; pair comparisons are memoised (each may cost a sympy call)."""
    if len(gold) != len(pred) or len(gold) > _MAX_ITEMS:
        return False
    memo: dict[tuple[int, int], bool] = {}

    def eq(i: int, j: int) -> bool:
        if (i, j) not in memo:
            memo[(i, j)] = equivalent(gold[i], pred[j], judge)
        return memo[(i, j)]

    owner: dict[int, int] = {}  # pred index -> gold index

    def augment(i: int, seen: set[int]) -> bool:
        for j in range(len(pred)):
            if j not in seen and eq(i, j):
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return all(augment(i, set()) for i in range(len(gold)))


def _matrices(gold: Node, pred: Node, judge: Judge) -> bool:
    if gold.kind == pred.kind == "matrix":
        return gold.shape == pred.shape and _ordered(gold.items, pred.items, judge)
    matrix, other = (gold, pred) if gold.kind == "matrix" else (pred, gold)
    if 1 in matrix.shape and other.kind in ORDERED:  # a column or row vector written as a tuple
        return _ordered(gold.items, pred.items, judge)
    if other.kind == "expr" and "\\begin{" in other.text:  # matrix arithmetic: `A + B`, `2A`, `AB`
        return judge.matrix(gold, pred)
    return False


def _equations(gold: Node, pred: Node, judge: Judge) -> bool:
    if gold.kind == pred.kind == "eq":
        if is_label(gold.text) and label_key(gold.text) == label_key(pred.text):
            return equivalent(gold.items[0], pred.items[0], judge)
        return judge.equation(gold, pred)
    eq, other = (gold, pred) if gold.kind == "eq" else (pred, gold)
    # A predicted `\frac{1}{2} \cdot 20 = 10` states its value last; a gold `7 = 11a+c` is an equation.
    stated = eq is pred and not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", eq.text))
    if not (is_label(eq.text) or stated) or other.kind == "assign":
        return False
    return equivalent(*((eq.items[0], other) if eq is gold else (other, eq.items[0])), judge)


def _assignments(gold: Node, pred: Node, judge: Judge) -> bool:
    if gold.kind == pred.kind == "assign":
        g_names = [label_key(e.text) for e in gold.items]
        p_names = [label_key(e.text) for e in pred.items]
        if sorted(g_names) == sorted(p_names) and len(set(g_names)) == len(g_names):
            by_name = dict(zip(p_names, pred.items))
            return all(equivalent(g.items[0], by_name[n].items[0], judge) for g, n in zip(gold.items, g_names))
        return _ordered(tuple(e.items[0] for e in gold.items), tuple(e.items[0] for e in pred.items), judge)
    assign, other = (gold, pred) if gold.kind == "assign" else (pred, gold)
    if other.kind not in ORDERED:
        return False
    values = tuple(e.items[0] for e in assign.items)
    return _ordered(values, other.items, judge) if assign is gold else _ordered(other.items, values, judge)


def canon_text(text: str) -> str:
    """Text answers compare case-insensitively, ignoring spacing, braces and punctuation."""
    return re.sub(r"[\s{}()\[\].,;:!?'\"\\]|^the\s+", "", text.lower())


@dataclass(slots=True, frozen=True)
class Num:
    value: Fraction
    decimal: bool = False
    places: int = 0
    """Digits after the decimal point, for decimals."""
    sig: int = 0
    """Significant digits shown, for decimals."""


_INT_RE = re.compile(r"^[+-]?\d{1,400}$")
_DEC_RE = re.compile(r"^[+-]?(\d{0,400})\.(\d{1,400})$|^[+-]?(\d{1,400})\.$")
_FRAC_RE = re.compile(r"^([+-]?\d{1,100})\s*/\s*(\d{1,100})$|^([+-]?)\\frac\{([+-]?\d{1,100})\}\{(\d{1,100})\}$")


def plain_number(text: str) -> Num | None:
    """An integer, decimal or integer fraction written plainly; None for anything else."""
    t = text.replace(" ", "")
    if _INT_RE.match(t):
        return Num(Fraction(int(t)))
    m = _DEC_RE.match(t)
    if m:
        whole, frac = (m.group(1) or "", m.group(2)) if m.group(2) is not None else (m.group(3), "")
        digits = (whole + frac).lstrip("0")
        return Num(Fraction(t.rstrip(".") or "0"), True, len(frac), max(len(digits), 1))
    m = _FRAC_RE.match(t)
    if m:
        if m.group(1) is not None:
            num, den, sign = int(m.group(1)), int(m.group(2)), 1
        else:
            num, den, sign = int(m.group(4)), int(m.group(5)), -1 if m.group(3) == "-" else 1
        return Num(Fraction(sign * num, den)) if den else None
    return None


def numbers_equal(x: Num, y: Num) -> bool:
    if x.value == y.value:
        return True
    if not (x.decimal or y.decimal):
        return False
    scale = max(abs(x.value), abs(y.value))
    if abs(x.value - y.value) <= scale * Fraction(1, 10**9):
        return True
    for dec, other in ((x, y), (y, x)):
        if dec.decimal and dec.sig >= MIN_ROUNDING_SIG_DIGITS:
            if abs(other.value - dec.value) <= Fraction(1, 2 * 10**dec.places):
                return True
    return False


def percent_variants(num: Num, node: Node) -> list[Num]:
    """`50%` may be meant as 50 or as 0.5; a percent sign is also often dropped. Both readings count."""
    if not node.pct:
        return [num]
    return [num, Num(num.value / 100, num.decimal, num.places + 2 if num.decimal else 0, num.sig)]


class FastJudge:
    """Decides plain numbers and text exactly; raises Undecided for anything that needs sympy."""

    def scalar(self, gold: Node, pred: Node) -> bool:
        same_marks = (gold.pct, gold.deg) == (pred.pct, pred.deg)
        if same_marks and gold.text and gold.text.replace(" ", "") == pred.text.replace(" ", ""):
            return True
        if "text" in (gold.kind, pred.kind):
            return bool(gold.text) and canon_text(gold.text) == canon_text(pred.text)
        a, b = plain_number(gold.text), plain_number(pred.text)
        if a is None or b is None:
            raise Undecided
        if any(numbers_equal(x, y) for x in percent_variants(a, gold) for y in percent_variants(b, pred)):
            return True
        if gold.deg or pred.deg:
            raise Undecided  # 30° against π/6 needs sympy
        return False

    def equation(self, gold: Node, pred: Node) -> bool:
        raise Undecided

    def sets(self, gold: Node, pred: Node) -> bool:
        raise Undecided

    def matrix(self, gold: Node, pred: Node) -> bool:
        raise Undecided

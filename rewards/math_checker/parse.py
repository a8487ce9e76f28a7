r"""Normalise an answer string and split it into structure, without sympy.

`parse_answer("x \in \left[1, \dfrac{3}{2}\right)")` gives `Node(kind="interval", items=(1, \frac{3}{2}),
closed=(True, False))`. Leaves stay LaTeX strings; sympy only ever sees one leaf at a time (in the bounded
child, see math_sympy.py), which keeps the expensive and hang-prone part small.

Node kinds: `expr` and `text` (leaves); `set` (braces, unordered), `list` (a bare comma list, unordered as
MATH-style "all solutions" answers are), `tuple` (ordered), `pair` (`(a, b)`: a point or an open interval,
decided by what it is compared with), `interval`, `union`, `matrix`, `eq` (`lhs = rhs`), `assign` (a list
of equations such as `x=1, y=2`), `rel` (inequalities), `reals`, `alt` (either reading counts: `a \approx b`,
or `1,22` as the list 1, 22 and as the decimal 1.22).

Separators: `1,000`, `1{,}000`, `11,\!111` and `1 000` are thousands; `1,5` and `1, 22` are lists; `1,22`,
`0,111` and `1000,99` (a comma that cannot be a thousands separator, two or more digits after it) are read
both as a list and as a decimal comma, since Math-Verify's suite and European answers write decimals so.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction

from rewards.math_checker import MAX_ANSWER_CHARS

_MAX_DEPTH = 8


class AnswerParseError(ValueError):
    pass


@dataclass(slots=True, frozen=True)
class Node:
    kind: str
    text: str = ""
    """Leaf LaTeX (`expr`, `text`, `rel`), or the left-hand side of an `eq`."""
    items: tuple["Node", ...] = ()
    """Children; for `eq` the single right-hand side; for `matrix` the entries row by row."""
    shape: tuple[int, int] = (0, 0)
    closed: tuple[bool, bool] = (False, False)
    """Interval ends: True for a closed (bracket) end."""
    pct: bool = False
    deg: bool = False


_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": r"\times ", "\u00f7": r"\div ", "\u00b7": r"\cdot ",
    "\u22c5": r"\cdot ", "\u2264": r"\le ", "\u2265": r"\ge ", "\u2260": r"\ne ", "\u03c0": r"\pi ",
    "\u221e": r"\infty ", "\u221a": r"\sqrt", "\u222a": r"\cup ", "\u2229": r"\cap ", "\u2205": r"\emptyset ",
    "\u00b0": "°", "\u00b2": "^2", "\u00b3": "^3", "\u00b9": "^1", "\u00bd": "(1/2)", "\u2248": r"\approx ",
    "\u00b1": r"\pm ", "\u2032": "'", "\u211d": r"\mathbb{R}", "\u2009": " ", "\u202f": " ", "\u00a0": " ",
}
_TEXT_CMDS = r"text|textbf|textit|textrm|texttt|textnormal|mathrm|mathbf|mathit|mathsf|mbox|hbox|bf|rm"
_TEXT_RE = re.compile(r"\\(?:" + _TEXT_CMDS + r")\s*\{([^{}]*)\}")
_SIMPLE_SUBS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\\[dtc]frac"), r"\\frac"),
    (re.compile(r"\\[dt]binom"), r"\\binom"),
    (re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)(?![a-zA-Z])"), ""),
    (re.compile(r"\\displaystyle|\\limits|\\nolimits"), ""),
    (re.compile(r"\\(?:leqslant|leq)(?![a-zA-Z])|<="), r"\\le "),
    (re.compile(r"\\(?:geqslant|geq)(?![a-zA-Z])|>="), r"\\ge "),
    (re.compile(r"\\neq(?![a-zA-Z])|!="), r"\\ne "),
    (re.compile(r"\\(?:varnothing)(?![a-zA-Z])|\\\{\s*\\\}"), r"\\emptyset "),
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|\bdegrees?\b"), "°"),
    (re.compile(r"\\%|\bpercent\b|\bpct\b"), "%"),
    (re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad(?![a-zA-Z])|~"), " "),  # not the `\\ ` of a matrix row
    (re.compile(r"\\(?:\$|euro|pounds)|\b(?:dollars?|USD|cents?|euros?)\b|[€£¥]"), " "),
    (re.compile(r"\binfinity\b"), r"\\infty "),
    (re.compile(r"\\(?:dots|ldots|cdots)\b"), "..."),
]
# Words after a number that are units or nouns ("5 cm", "12 apples"), never variables.
_MATH_WORDS = {"pi", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt", "and", "or", "i", "e"}
_FUNCTION_WORDS = {"arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "sqrt", "floor", "ceil", "infty",
                   "frac", "choose", "binom", "sech", "csch", "coth", "arcsec", "arccsc", "arccot"}
_UNIT_TOKEN_RE = re.compile(r"^(?:[A-Za-z]+(?:/[A-Za-z]+)?\.?)?(?:\^\{?\d\}?)?$")  # cm, km/h, ft^2
_ATTACHED_UNITS = ("cm", "mm", "km", "kg", "mg", "ml", "sec", "hrs", "hr", "ft", "mph", "kmh")
_REPEATING_RE = re.compile(r"^(-?)(\d*)\.(\d*)\\overline\{(\d{1,50})\}$")
_E_NOTATION_RE = re.compile(r"^(-?\d+(?:\.\d+)?)[eE]([+-]?\d{1,4})$")
_THOUSANDS_RE = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")  # 0,111 is a decimal comma
_DECIMAL_COMMA_RE = re.compile(r"^(-?\d+),(\d{2,})$")
# `11,\! 111` and `1{,}000` in MATH-style LaTeX: a thousands comma, not a list.
_LATEX_THOUSANDS_RE = re.compile(r"(\d)\s*(?:\{,\}|,\\!)\s*(?=\d{3}(?!\d))")
# A LaTeX command written with its backslash doubled (`\\frac`), an escaping slip of JSON and raw strings.
_DOUBLED_CMD_RE = re.compile(r"(?<!\\)\\\\(?=[A-Za-z])")
_DOUBLED_KNOWN_CMD_RE = re.compile(
    r"(?<!\\)\\\\(?=(?:[dt]?frac|sqrt|left|right|pi|cdot|times|text|mathrm|infty|sin|cos|tan|ln|log)(?![A-Za-z]))")
# `(11,7)or(7,11)`, `W(x)=1orW(x)=-1`: connectives glued to math when text spacing was stripped.
GLUED_CONNECTIVE_RE = re.compile(r"(?<=[\d)\]}])\s*(?:or|and)(?=[A-Z(\[{\\\d-])")
_SPACED_THOUSANDS_RE = re.compile(r"(?<![\d.])(\d{1,3})((?: \d{3})+)(?![\d.])")
_REALS = {r"\mathbb{R}", r"\mathbb R", r"\R", "all real numbers", "all reals", "(-\\infty,\\infty)"}
_OPENERS = {"(": 1, "[": 1, "{": 1, r"\{": 1, r"\langle": 1}
_CLOSERS = {")": 1, "]": 1, "}": 1, r"\}": 1, r"\rangle": 1}
_REL_RE = re.compile(r"(?<![\\a-zA-Z])[<>]|\\(?:le|ge|lt|gt|ne)(?![a-zA-Z])")
_SIMPLE_LHS_RE = re.compile(r"^(?:\\?[A-Za-z]+'?(?:_\{?[\w\\]+\}?)?(?:\([^()=]{0,20}\))?|\\angle\s*[A-Z]+|m\\angle\s*[A-Z]+)$")


def normalize(answer: str) -> str:
    """String-level cleanup shared by gold and predicted answers."""
    s = answer
    for ch, rep in _UNICODE.items():
        if ch in s:
            s = s.replace(ch, rep)
    s = unicodedata.normalize("NFKC", s)
    s = (_DOUBLED_KNOWN_CMD_RE if "begin{" in s else _DOUBLED_CMD_RE).sub(r"\\", s)  # `\\` is a matrix row
    s = _LATEX_THOUSANDS_RE.sub(r"\1", s)
    s = s.replace("\\$", " ").replace("$", " ").replace("\\(", " ").replace("\\)", " ")
    s = s.replace("\\[", " ").replace("\\]", " ")
    for _ in range(3):  # nested \text{\textbf{…}}
        s = _TEXT_RE.sub(lambda m: " " + m.group(1) + " ", s)
    for pattern, rep in _SIMPLE_SUBS:
        s = pattern.sub(rep, s)
    s = re.sub(r"(\d)\s*\{,\}\s*(\d)", r"\1\2", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s*(?:,?\s+\b(?:and|or)\b\s+)", ", ", s)  # "2 and 3" lists
    s = GLUED_CONNECTIVE_RE.sub(", ", s)
    s = s.rstrip(" .;,")
    s = _SPACED_THOUSANDS_RE.sub(lambda m: m.group(1) + m.group(2).replace(" ", ""), s)
    return s.strip()


def parse_answer(answer: str) -> Node | None:
    """Normalise and structure an answer; None if nothing is left. Raises AnswerParseError on hostile input."""
    if len(answer) > MAX_ANSWER_CHARS:
        raise AnswerParseError(f"The answer is {len(answer)} characters long; the limit is {MAX_ANSWER_CHARS}.")
    s = normalize(answer)
    if not s:
        return None
    if _max_brace_depth(s) > 40:
        raise AnswerParseError("The answer nests braces more than 40 deep.")
    return _parse(s, 0)


def _parse(s: str, depth: int) -> Node:
    s = s.strip()
    s = re.sub(r"^[A-Za-z](?:_\{?\w+\}?)?\s*\\in\s*", "", s)  # "x \in [1, 2)" is the interval
    if depth > _MAX_DEPTH or not s:
        return leaf(s)
    if s.startswith("\\begin{"):
        matrix = _matrix(s, depth)
        if matrix is not None:
            return matrix
    if s in _REALS or s.lower() in _REALS:
        return Node("reals")
    if s == r"\emptyset":
        return Node("set")
    for sep in (r"\cup", " U "):
        parts = split_top(s, sep)
        if len(parts) > 1:
            return Node("union", items=tuple(_parse(p, depth + 1) for p in parts))
    if _THOUSANDS_RE.match(s):
        return leaf(s)  # "1,000" is a number, not a list
    comma = _DECIMAL_COMMA_RE.match(s)
    if comma:
        as_list = Node("list", items=(leaf(comma.group(1)), leaf(comma.group(2))))
        return Node("alt", items=(as_list, leaf(f"{comma.group(1)}.{comma.group(2)}")))
    parts = split_top(s, ",")
    groups = split_top(s, ";")
    if len(parts) == 1 or (len(groups) > 1 and all("=" in g for g in groups)):
        parts = groups  # "p=5,q=2;p=7,q=2": semicolons separate groups of assignments
    if len(parts) > 1:
        return _list(parts, depth)
    wrapped = _wrapped(s)
    if wrapped is not None:
        return _bracketed(*wrapped, depth=depth)
    approx = split_top(s, r"\approx")
    if len(approx) > 1:
        return Node("alt", items=(_parse(approx[0], depth + 1), _parse(approx[-1], depth + 1)))
    sides = _split_equals(s)
    if len(sides) > 1:
        # A chain "AB = \sqrt{2} = 1.41" states its value last, and is named by its label if it has one
        # ("1 = \zeta = x = 0" is x = 0).
        lhs = next((side for side in sides[:-1] if is_label(side)), sides[0]) if len(sides) > 2 else sides[0]
        return Node("eq", text=lhs.strip(), items=(_parse(sides[-1], depth + 1),))
    if _REL_RE.search(s):
        return Node("rel", text=s)
    for pm in (r"\pm", r"\mp"):
        pm_parts = split_top(s, pm)
        if len(pm_parts) == 2:
            a, b = pm_parts[0].strip(), pm_parts[1].strip()
            return Node("set", items=(leaf(f"{a} + {b}" if a else b), leaf(f"{a} - {b}" if a else f"-{b}")))
    return leaf(s)


def _list(parts: list[str], depth: int) -> Node:
    nodes = tuple(_parse(p, depth + 1) for p in parts)
    eqs = [n.kind == "eq" and is_label(n.text) for n in nodes]
    if all(eqs) and len({label_key(n.text) for n in nodes}) == 1:
        # "x = 5 or x = -5": one name, several solutions
        return Node("eq", text=nodes[0].text, items=(Node("list", items=tuple(n.items[0] for n in nodes)),))
    if all(eqs):
        return Node("assign", items=nodes)
    if eqs[0] and not any(eqs[1:]) and not any(n.kind == "eq" for n in nodes[1:]):
        # "n = 2, 3, 4": one name with several values
        values = Node("list", items=(nodes[0].items[0], *nodes[1:]))
        return Node("eq", text=nodes[0].text, items=(values,))
    return Node("list", items=nodes)


def _bracketed(open_tok: str, inner: str, close_tok: str, depth: int) -> Node:
    parts = split_top(inner, ",") if inner.strip() else []
    items = tuple(_parse(p, depth + 1) for p in parts)
    if open_tok == r"\{" and close_tok == r"\}":
        return Node("set", items=items)
    if open_tok == r"\langle":
        return Node("tuple", items=items)
    if open_tok in "([" and close_tok in ")]":
        if len(items) == 2:
            if open_tok == "(" and close_tok == ")":
                return Node("pair", items=items)
            return Node("interval", items=items, closed=(open_tok == "[", close_tok == "]"))
        if len(items) > 2:
            return Node("tuple", items=items)
    if open_tok == "{" and close_tok == "}" and len(items) > 1:
        return Node("set", items=items)  # a set written without backslashes
    if len(parts) == 1 and open_tok in "({[":
        return _parse(inner, depth + 1)  # redundant grouping: "(5)", "{x}"
    return leaf(open_tok + inner + close_tok)


def _matrix(s: str, depth: int) -> Node | None:
    m = re.match(r"^\\begin\{([pbvBV]?matrix|array|smallmatrix)\}(\{[^{}]*\})?(.*)\\end\{\1\}$", s, re.S)
    if m is None or "\\begin{" in m.group(3):
        return None  # `A + B`: matrix arithmetic, a leaf for sympy
    rows = [r for r in re.split(r"\\\\", m.group(3)) if r.strip() and r.strip() != r"\hline"]
    cells = [split_top(r.replace(r"\hline", ""), "&") for r in rows]
    width = len(cells[0]) if cells else 0
    if not cells or any(len(r) != width for r in cells):
        return None
    items = tuple(_parse(c, depth + 1) for row in cells for c in row)
    return Node("matrix", items=items, shape=(len(cells), width))


def leaf(s: str) -> Node:
    """A leaf: strip units, percent and degree marks, thousands separators; decide expression vs text."""
    s = s.strip()
    pct = s.endswith("%")
    deg = "°" in s
    s = s.replace("%", " ").replace("°", " ").strip()
    s = _strip_units(s)
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    if re.match(r"^-?\.\d", s):
        s = s.replace(".", "0.", 1)
    s = _REPEATING_RE.sub(_repeating_to_fraction, s)
    s = _E_NOTATION_RE.sub(r"\1 \\times 10^{\2}", s)  # 1.5e3: LaTeX parsers read the e as Euler's number
    if not s:
        return Node("text", text="")
    if _looks_like_text(s):
        return Node("text", text=s, pct=pct, deg=deg)
    return Node("expr", text=s, pct=pct, deg=deg)


def _repeating_to_fraction(m: re.Match[str]) -> str:
    """0.1\\overline{6} -> \\frac{1}{6}: a repeating decimal is an exact rational."""
    sign, whole, fixed, rep = m.group(1), m.group(2) or "0", m.group(3), m.group(4)
    value = Fraction(int(whole + fixed + rep) - int(whole + fixed), 10 ** len(fixed) * (10 ** len(rep) - 1))
    return f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _strip_units(s: str) -> str:
    # Token scan from the end (linear time): trailing words, optionally squared, after a numeric head.
    tokens = s.split(" ")
    words: list[str] = []
    while len(tokens) > 1 and _UNIT_TOKEN_RE.match(tokens[-1]):
        words.extend(re.findall(r"[A-Za-z]+", tokens.pop()))
    head = " ".join(tokens).strip()
    head_letters = re.sub(r"\\[A-Za-z]+", "", head)
    if (
        words
        and re.search(r"[\d})\].]$", head)
        and re.search(r"\d", head)
        and not re.search(r"[A-Za-z]", head_letters)
        and not any(w.lower() in _MATH_WORDS for w in words)
        and (len(words) > 1 or len(words[0]) > 1 or words[0] in "mgsl")
    ):
        return head
    for unit in _ATTACHED_UNITS:
        if s.endswith(unit) and re.match(r"^-?[\d.,]+$", s[: -len(unit)].strip()):
            return s[: -len(unit)].strip()
    return s


def _looks_like_text(s: str) -> bool:
    s = re.sub(r"\\(?:begin|end)\{[^{}]*\}", " ", s)  # `pmatrix` names an environment, not a word
    words = re.findall(r"(?<![\\A-Za-z])[A-Za-z]{4,}", s)
    return any(w.lower() not in _FUNCTION_WORDS for w in words)


def is_simple_lhs(lhs: str) -> bool:
    """A name such as `x`, `a_1`, `f(x)`, `\\theta`, `AB`, `\\angle ABC`: an assignment, not an equation."""
    return bool(_SIMPLE_LHS_RE.match(lhs.strip().replace(" ", "")))


def is_label(lhs: str) -> bool:
    """A left-hand side that only names the value: a name, or names combined as `(p,q)`, `|AB|`, `A:B`,
    `\\frac{NO}{BO}`, `V_1/V_2`. `7 = 11a+c` or `a+3z = 0` are equations, not labels (Math-Verify's rule:
    a label is made of symbols only; sums are left out, as `x+y = 5` may be the equation asked for)."""
    t = lhs.strip().replace(" ", "")
    if is_simple_lhs(t):
        return True
    m = re.match(r"^\\frac\{([^{}]+)\}\{([^{}]+)\}$", t)
    if m:
        return is_simple_lhs(m.group(1)) and is_simple_lhs(m.group(2))
    if len(t) > 2 and t[0] == t[-1] == "|":
        return is_simple_lhs(t[1:-1])
    for sep in (":", "/"):
        if sep in t:
            return all(is_simple_lhs(p) for p in t.split(sep))
    if t.startswith("(") and t.endswith(")"):
        return all(is_simple_lhs(p) for p in t[1:-1].split(","))
    return False


def label_key(lhs: str) -> str:
    """The name a label stands for: `a_{1}` is `a_1`, and `W(n)` and `W(x)` name the same function."""
    t = re.sub(r"[\s{}]", "", lhs)
    return re.sub(r"^(\\?[A-Za-z]+'?)\([A-Za-z]\)$", r"\1()", t)


def split_top(s: str, sep: str) -> list[str]:
    """Split on `sep` outside every kind of bracket; `(` and `]` pair up so intervals split correctly."""
    parts, depth, start, i, n = [], 0, 0, 0, len(s)
    while i < n:
        if depth == 0 and s.startswith(sep, i):
            # A command separator must not be the prefix of a longer command (\pm vs \pmod).
            if not (sep[0] == "\\" and s[i + len(sep) : i + len(sep) + 1].isalpha()):
                parts.append(s[start:i])
                i += len(sep)
                start = i
                continue
        tok = _token(s, i)
        depth += _OPENERS.get(tok, 0) - _CLOSERS.get(tok, 0)
        i += len(tok)
    parts.append(s[start:])
    return [p.strip() for p in parts] if len(parts) > 1 else [s]


def _token(s: str, i: int) -> str:
    if s[i] == "\\":
        m = re.match(r"\\(?:[A-Za-z]+|.)", s[i : i + 40])
        return m.group(0) if m else s[i]
    return s[i]


def _wrapped(s: str) -> tuple[str, str, str] | None:
    open_tok = _token(s, 0)
    if open_tok not in _OPENERS:
        return None
    depth, i = 0, 0
    while i < len(s):
        tok = _token(s, i)
        depth += _OPENERS.get(tok, 0) - _CLOSERS.get(tok, 0)
        i += len(tok)
        if depth == 0:
            if i != len(s):
                return None
            return open_tok, s[len(open_tok) : i - len(tok)], tok
    return None


def _split_equals(s: str) -> list[str]:
    parts = split_top(s, "=")
    return parts if all(p.strip() for p in parts) else [s]


def _max_brace_depth(s: str) -> int:
    depth = best = 0
    for c in s:
        if c in "{([":
            depth += 1
            best = max(best, depth)
        elif c in "})]":
            depth -= 1
    return best


def leaves(node: Node) -> list[Node]:
    if node.kind in ("expr", "text"):
        return [node]
    out = [] if node.kind != "eq" else [Node("text", text=node.text)]
    for item in node.items:
        out.extend(leaves(item))
    return out

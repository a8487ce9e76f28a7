"""Synthetic verifiable reasoning task: arithmetic word problems with an integer or fraction answer.

Every problem is generated from a seed, so a split is the same on every machine. The SFT split carries a
worked chain of thought in the R1 template (``<think>…</think><answer>…</answer>``); the RL and eval splits
carry only the prompt and the gold answer. The eval and dev splits are held out by construction: a problem
belongs to one of them iff a hash of its prompt falls in its bucket (1 in 10 each), and the SFT and RL splits
skip both buckets, whatever their sizes and seeds. Dev is for model selection (early stopping, learning
curves), eval for the reported score, so selecting on dev never leaks into the reported number.

The chain of thought is digit by digit (column addition with carries, column subtraction with borrows,
long multiplication by a one-digit factor, gcd reduction for fractions): a model of a million parameters
cannot add two numbers in one step, but it can learn to follow columns. Two options change only the SFT
responses, never the problems: ``mul_methods`` (multiply by long multiplication, by place value, or each
problem one of the two) and ``worked`` (the share of responses that work the problem out; the others give
the bare answer after an empty think block, as a cold-start set gathered from mixed sources might). Both
choices are made per problem from a hash of its prompt.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable
from fractions import Fraction
from math import gcd

SPLIT_OFFSETS = {"sft": 0, "rl": 1_000_003, "eval": 2_000_003, "dev": 3_000_017}
_BUCKETS = {"eval": 0, "dev": 1}  # hash buckets (of 10) reserved for the held-out splits
OPS = ("add", "sub", "mul", "frac", "share")

_NAMES = ["Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jo", "Kai", "Lea", "Max", "Nia"]
_THINGS = ["apples", "books", "coins", "marbles", "pens", "stamps", "shells", "cards", "beads", "rocks"]


@dataclass(frozen=True, slots=True)
class Problem:
    op: str
    prompt: str
    answer: str
    thought: str

    def response(self, worked: bool = True) -> str:
        """The R1-template answer; ``worked=False``: the bare answer after an empty think block."""
        thought = f"\n{self.thought}\n" if worked else "\n"
        return f"<think>{thought}</think>\n<answer>{self.answer}</answer>"


def prompt_unit(prompt: str, salt: str) -> float:
    """A number in [0, 1) fixed by the prompt: per-problem choices that never shift the problem generator."""
    return int(hashlib.sha1(f"{salt}:{prompt}".encode()).hexdigest()[:8], 16) / 2**32


def _digits(n: int) -> list[int]:
    return [int(c) for c in reversed(str(n))]


def _add_steps(a: int, b: int) -> list[str]:
    da, db = _digits(a), _digits(b)
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = da[i] if i < len(da) else 0
        y = db[i] if i < len(db) else 0
        s = x + y + carry
        carry_txt = f" + {carry}" if carry else ""
        steps.append(f"{x} + {y}{carry_txt} = {s}, write {s % 10} carry {s // 10}")
        carry = s // 10
    if carry:
        steps.append(f"write {carry}")
    steps.append(f"{a} + {b} = {a + b}")
    return steps


def _sub_steps(a: int, b: int) -> list[str]:
    """Column subtraction of b from a (a >= b) with borrows."""
    da, db = _digits(a), _digits(b)
    steps, borrow = [], 0
    for i in range(len(da)):
        x = da[i] - borrow
        y = db[i] if i < len(db) else 0
        if x < y:
            steps.append(f"{x} - {y} needs a borrow: {x + 10} - {y} = {x + 10 - y}")
            borrow = 1
        else:
            steps.append(f"{x} - {y} = {x - y}")
            borrow = 0
    steps.append(f"{a} - {b} = {a - b}")
    return steps


def _mul_steps(a: int, d: int) -> list[str]:
    """Long multiplication of a by a one-digit factor d."""
    steps, carry = [], 0
    for x in _digits(a):
        p = x * d + carry
        carry_txt = f" + {carry}" if carry else ""
        steps.append(f"{x} * {d}{carry_txt} = {p}, write {p % 10} carry {p // 10}")
        carry = p // 10
    if carry:
        steps.append(f"write {carry}")
    steps.append(f"{a} * {d} = {a * d}")
    return steps


def _tens_steps(a: int, d: int) -> list[str]:
    """Multiplication of a by a one-digit factor d by place value: split a into its tens, hundreds... and
    units, multiply each part with a table fact, then add the partial products in columns. Longer than long
    multiplication, but every step is a plain table fact or a column addition; long multiplication adds the
    carry to a product in the same step ("8 * 9 + 3 = 75"), a fact of its own for each carry."""
    parts = [int(c) * 10**p for p, c in enumerate(reversed(str(a))) if c != "0"][::-1]
    steps = [f"{a} = {' + '.join(map(str, parts))}"] if len(parts) > 1 else []
    for part in parts:
        head = int(str(part)[0])
        steps.append(f"{head} * {d} = {head * d}" + (f", so {part} * {d} = {part * d}" if part >= 10 else ""))
    total = parts[0] * d
    for part in parts[1:]:
        steps += _add_steps(total, part * d)
        total += part * d
    steps.append(f"{a} * {d} = {a * d}")
    return steps


MUL_METHODS = {"long": _mul_steps, "tens": _tens_steps}


def _fraction_steps(num: int, den: int) -> tuple[list[str], str]:
    g = gcd(num, den)
    value = Fraction(num, den)
    steps = [f"the fraction is {num}/{den}", f"gcd({num}, {den}) = {g}"]
    if g > 1:
        steps.append(f"{num}/{den} = {num // g}/{den // g}")
    answer = str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    return steps, answer


def _number(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1) if digits > 1 else 1, 10**digits - 1)


def generate_problem(rng: random.Random, digits: int = 2, ops: tuple[str, ...] = OPS,
                     mul_methods: tuple[str, ...] = ("long",)) -> Problem:
    """One problem. ``mul_methods``: how the chains of thought multiply ("long", "tens"); with several, each
    multiplication problem demonstrates one of them, picked by a hash of its prompt."""
    op = rng.choice(ops)
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    if op == "add":
        a, b = _number(rng, digits), _number(rng, digits)
        prompt = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
        return Problem(op, prompt, str(a + b), "\n".join(_add_steps(a, b)))
    if op == "sub":
        a, b = sorted((_number(rng, digits), _number(rng, digits)), reverse=True)
        prompt = f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?"
        return Problem(op, prompt, str(a - b), "\n".join(_sub_steps(a, b)))
    if op == "mul":
        a, d = _number(rng, digits), rng.randint(2, 9)
        prompt = f"{name} fills {d} boxes with {a} {thing} each. How many {thing} is that in total?"
        # Chosen by the prompt's hash, not the generator: the problems drawn never depend on the methods.
        method = mul_methods[int(prompt_unit(prompt, "mul_method") * len(mul_methods))]
        return Problem(op, prompt, str(a * d), "\n".join(MUL_METHODS[method](a, d)))
    if op == "frac":
        den = rng.randint(2, 12)
        eaten = rng.randint(1, den - 1)
        prompt = (f"A cake is cut into {den} equal pieces and {name} eats {eaten} of them. "
                  f"What fraction of the cake is left?")
        steps = [f"{den} - {eaten} = {den - eaten} pieces are left"]
        more, answer = _fraction_steps(den - eaten, den)
        return Problem(op, prompt, answer, "\n".join(steps + more))
    if op == "share":
        total = _number(rng, digits)
        people = rng.randint(2, 12)
        prompt = f"{name} shares {total} kg of rice equally among {people} people. How many kg does each get?"
        steps, answer = _fraction_steps(total, people)
        return Problem(op, prompt, answer, "\n".join(steps))
    raise ValueError(f"Unknown arithmetic operation {op!r}; choose from {', '.join(OPS)}.")


def held_out_split(prompt: str) -> str | None:
    """"eval" or "dev" for the held-out buckets (one prompt in ten each, by a hash that does not depend on any
    seed), None for prompts the training splits may use."""
    bucket = int(hashlib.sha1(prompt.encode()).hexdigest()[:8], 16) % 10
    return next((split for split, b in _BUCKETS.items() if b == bucket), None)


def training_split(prompt: str) -> str:
    """"sft" or "rl", half the training prompts each, by another part of the prompt's hash (for tasks whose
    SFT and RL splits must not share prompts either)."""
    return "sft" if int(hashlib.sha1(prompt.encode()).hexdigest()[8:16], 16) % 2 == 0 else "rl"


def make_split(split: str, size: int, seed: int = 0, digits: int = 2, ops: tuple[str, ...] = OPS,
               mul_methods: tuple[str, ...] = ("long",), worked: float = 1.0) -> list[dict]:
    """Rows of one split. ``sft`` rows carry ``response``; all rows carry ``prompt``, ``answer``, ``domain``.

    ``worked``: the share of responses that work the problem out; the others give the bare answer after an
    empty think block (which rows, by a hash of the prompt, so the problems themselves do not change).

    Duplicated prompts are skipped within a split; no two of eval, dev and the training splits share a prompt.
    """

    def draw(rng: random.Random) -> dict:
        p = generate_problem(rng, digits, ops, mul_methods)
        return {"prompt": p.prompt, "answer": p.answer, "domain": "math", "op": p.op,
                "response": p.response(worked=prompt_unit(p.prompt, "worked") < worked)}

    return draw_split(split, size, seed, draw, f"digits={digits}, ops={ops}")


def draw_split(split: str, size: int, seed: int, draw: Callable[[random.Random], dict], task: str,
               disjoint_training: bool = False,
               complete: Callable[[dict, random.Random], dict] | None = None) -> list[dict]:
    """``size`` rows of ``split`` from ``draw`` (a row with ``prompt`` and ``response``, given a seeded RNG).

    The held-out rule of this module applies to any synthetic task: a prompt lands in eval or dev by its hash
    alone, and only ``sft`` rows keep the reference ``response``. With ``disjoint_training``, sft and rl are
    also cut apart by hash (``training_split``). ``task`` names the settings in errors. ``complete``, when
    given, finishes a row only once its prompt is accepted (for tasks whose rows are costly to finish, such
    as drawing test cases and computing their outputs), from the same RNG.
    """
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"Unknown split {split!r}; choose from {', '.join(SPLIT_OFFSETS)}.")
    rng = random.Random(seed * 7_919 + SPLIT_OFFSETS[split])
    seen: set[str] = set()
    rows: list[dict] = []
    attempts = 0
    while len(rows) < size:
        attempts += 1
        if attempts > 200 * size + 10_000:
            raise ValueError(f"Only {len(rows)} distinct problems exist for {task}; "
                             f"ask for fewer than {size} or widen the task.")
        row = draw(rng)
        prompt = row["prompt"]
        if prompt in seen or held_out_split(prompt) != (split if split in _BUCKETS else None):
            continue
        if disjoint_training and split not in _BUCKETS and training_split(prompt) != split:
            continue
        seen.add(prompt)
        if complete is not None:
            row = complete(row, rng)
        if split != "sft":
            del row["response"]
        rows.append({"id": f"{split}-{seed}-{len(rows)}", **row})
    return rows

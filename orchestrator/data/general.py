"""Synthetic general (non-reasoning) task: short instructions whose constraints a rule can check.

R1's all-scenario RL and its second SFT round mix reasoning data with general data, scored by rules where a
rule can judge. These tasks are that general data at a size tiny models can learn: repeat a word, reverse or
sort a short list, change a phrase's case, count items, write a given number of words from a given set,
start and end a line in a required way, give a comma-separated list. Every row carries `constraints`, the
JSON-serialisable checks the `instruction` reward (rewards/instruction.py) applies to the answer.

Responses use the same template as the reasoning data, `<think>\\n…\\n</think>\\n<answer>…</answer>`, with a
one-line thought instead of a long chain of thought (R1's non-reasoning SFT data has none to speak of), so the
`format` reward applies to both domains unchanged. Prompts are short and the vocabulary is a few dozen words,
for models with a 512-entry tokenizer and 256-token sequences.

Splits are drawn by synthetic.draw_split: the same seed gives the same rows everywhere, eval and dev are held
out by a hash of the prompt, and sft and rl are cut apart by another part of that hash, so no prompt is in two
splits (RL on general prompts then practises the instructions on prompts SFT never showed).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from orchestrator.data.synthetic import draw_split

WORDS = ("apple", "bird", "box", "cloud", "cup", "dog", "egg", "fish", "green", "hat", "ice", "jam", "kite",
         "lamp", "leaf", "moon", "nest", "owl", "pen", "rain", "star", "sun", "tree", "wind")


@dataclass(slots=True)
class Task:
    kind: str
    prompt: str
    answer: str
    thought: str
    constraints: dict[str, Any] = field(default_factory=dict)

    def response(self) -> str:
        return f"<think>\n{self.thought}\n</think>\n<answer>{self.answer}</answer>"


def _words(rng: random.Random, k: int) -> list[str]:
    return rng.sample(WORDS, k)


def _listed(items: list[str]) -> str:
    return ", ".join(items)


def _repeat(rng: random.Random) -> Task:
    phrase, n = _words(rng, rng.choice((1, 1, 2))), rng.randint(2, 5)
    what = f"word {phrase[0]}" if len(phrase) == 1 else f"words {' '.join(phrase)}"
    return Task("repeat", f"Repeat the {what} {n} times.", " ".join(phrase * n), f"{' '.join(phrase)}, {n} times",
                {"words": phrase * n})


def _reverse(rng: random.Random) -> Task:
    items = _words(rng, rng.randint(3, 5))
    back = items[::-1]
    return Task("reverse", f"Reverse the list: {_listed(items)}.", _listed(back),
                f"{len(items)} words, last one first", {"items": back})


def _sort(rng: random.Random) -> Task:
    k = rng.randint(3, 5)
    if rng.random() < 0.5:
        items = _words(rng, k)
        done = sorted(items)
        return Task("sort", f"Sort these words: {_listed(items)}.", _listed(done),
                    "in order of the alphabet", {"items": done})
    numbers = rng.sample(range(100), k)
    done = [str(x) for x in sorted(numbers)]
    return Task("sort", f"Sort from small to large: {_listed([str(x) for x in numbers])}.", _listed(done),
                "smallest number first", {"items": done})


def _upper(rng: random.Random) -> Task:
    phrase = " ".join(_words(rng, rng.randint(2, 3)))
    return Task("upper", f"Write in capital letters: {phrase}.", phrase.upper(), "every letter in capitals",
                {"case": "upper", "equals": phrase.upper()})


def _lower(rng: random.Random) -> Task:
    phrase = " ".join(_words(rng, rng.randint(2, 3)))
    return Task("lower", f"Write in small letters: {phrase.upper()}.", phrase, "every letter small",
                {"case": "lower", "equals": phrase})


def _count(rng: random.Random) -> Task:
    items = [rng.choice(WORDS) for _ in range(rng.randint(2, 8))]
    thought = ", ".join(f"{word} {i}" for i, word in enumerate(items, 1))  # counting out loud
    return Task("count", f"How many words are in this list: {_listed(items)}?", str(len(items)), thought,
                {"equals": str(len(items))})


def _exact_words(rng: random.Random) -> Task:
    allowed, k = _words(rng, 3), rng.randint(2, 6)
    answer = " ".join(rng.choice(allowed) for _ in range(k))
    return Task("exact_words", f"Write exactly {k} words using only: {_listed(allowed)}.", answer,
                f"{k} words from the list", {"word_count": k, "allowed_words": allowed})


_ENDINGS = {".": "a period", "!": "an exclamation mark", "?": "a question mark"}


def _start_end(rng: random.Random) -> Task:
    picked = _words(rng, rng.randint(3, 6))
    if rng.random() < 0.5:
        end = rng.choice(list(_ENDINGS))
        what, answer = _ENDINGS[end], " ".join(picked) + end
    else:
        end = what = picked[-1]
        answer = " ".join(picked)
    return Task("start_end", f"Write {len(picked)} words. Start with {picked[0]} and end with {what}.", answer,
                f"{picked[0]} first, {what} last",
                {"word_count": len(picked), "starts_with": picked[0], "ends_with": end})


def _comma_list(rng: random.Random) -> Task:
    allowed, n = _words(rng, 5), rng.randint(2, 4)
    return Task("comma_list", f"List {n} words from {_listed(allowed)}, split by commas.",
                _listed(rng.sample(allowed, n)), f"{n} words with commas between",
                {"list_length": n, "allowed_words": allowed})


_MAKERS: dict[str, Callable[[random.Random], Task]] = {
    "repeat": _repeat, "reverse": _reverse, "sort": _sort, "upper": _upper, "lower": _lower, "count": _count,
    "exact_words": _exact_words, "start_end": _start_end, "comma_list": _comma_list,
}
KINDS = tuple(_MAKERS)


def generate_task(rng: random.Random, kinds: tuple[str, ...] = KINDS) -> Task:
    return _MAKERS[rng.choice(kinds)](rng)


def make_general_split(split: str, size: int, seed: int = 0, kinds: tuple[str, ...] = KINDS) -> list[dict]:
    """Rows of one split: ``id``, ``prompt``, ``domain`` ("general"), ``kind``, ``constraints``, and for
    ``sft`` the reference ``response``. Kinds with few distinct prompts (``repeat`` has a few thousand) are
    drawn less often once their prompts run out, since a split never repeats a prompt."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"Unknown general task kinds {unknown or '(none given)'}; choose from {', '.join(KINDS)}.")

    def draw(rng: random.Random) -> dict:
        task = generate_task(rng, kinds)
        return {"prompt": task.prompt, "domain": "general", "kind": task.kind, "constraints": task.constraints,
                "response": task.response()}

    return draw_split(split, size, seed, draw, f"the general kinds {', '.join(kinds)}", disjoint_training=True)

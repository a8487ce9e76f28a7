"""Find the final answer in an R1-style completion.

Order, as R1-style completions give answers:
1. The reasoning is never the answer: everything up to the last `</think>` is dropped, and a completion
   whose `<think>` never closes has no answer.
2. An `<answer>…</answer>` block narrows the search to its content (the last block; an unterminated one
   runs to the end).
3. The last `\\boxed{…}` or `\\fbox{…}` (braces balanced, `\\{` escapes honoured; `\\boxed 5` too).
4. "final answer is …", "the answer is …", "Answer: …".
5. The last markdown bold `**…**`.
6. Inside an answer block: the whole block. Otherwise a trailing math span (`$…$`, `\\(…\\)`, `\\[…\\]`)
   or the last number.
Multiple-choice letters are read from the extracted answer (or the answer phrases) by `choice_letter`.

Everything here is linear-time string scanning over a bounded tail of the text: no regex that can
backtrack catastrophically on adversarial input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rewards.math_checker import MAX_ANSWER_CHARS

# Only the end of the answer region is searched; final answers live there and this bounds the work.
_TAIL_CHARS = 20_000
_MAX_BOXES = 64

_PHRASE_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*:?\s*",
    re.IGNORECASE,
)
_BOLD_RE = re.compile(r"\*\*([^*\n]{1,500})\*\*")
_MATH_SPAN_RE = re.compile(r"\$\$([^$]{1,1000})\$\$|\$([^$]{1,1000})\$|\\\((.{1,1000}?)\\\)|\\\[(.{1,1000}?)\\\]", re.S)
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_LETTER_RE = re.compile(r"^\(?\s*([A-Ja-j])\s*[\).:]?$")
_LETTER_PHRASE_RE = re.compile(
    r"(?:answer|option|choice)\s*(?:is|:)?\s*:?\s*\**\s*\(?\s*([A-J])\s*\)?(?![A-Za-z])", re.IGNORECASE
)


@dataclass(slots=True)
class Extraction:
    answer: str | None
    """The extracted answer text, or None when the completion has none."""
    how: str
    """Which rule found it (`boxed`, `answer_tag`, `phrase`, `bold`, `math_span`, `number`, …) or why not."""
    region: str = ""
    """The text the answer was searched in (after dropping the reasoning)."""


def answer_region(completion: str) -> tuple[str | None, str]:
    """The text after the reasoning, narrowed to the last <answer> block if any; None while still thinking."""
    text = completion
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:
        return None, "unterminated_think"
    start = text.rfind("<answer>")
    if start != -1:
        body = text[start + len("<answer>") :]
        end = body.find("</answer>")
        return (body if end == -1 else body[:end]), "answer_tag"
    return text, "text"


def find_boxed(text: str, last_only: bool = True) -> list[str]:
    r"""Contents of `\boxed{…}` / `\fbox{…}` groups (all, or just the last), brace-balanced."""
    found: list[str] = []
    pos = len(text)
    for _ in range(_MAX_BOXES):  # past this many broken boxes the text is garbage, not an answer
        i = max(text.rfind("\\boxed", 0, pos), text.rfind("\\fbox", 0, pos))
        if i == -1:
            break
        pos = i
        content = _group_after(text, i + (6 if text.startswith("\\boxed", i) else 5))
        if content is not None and content.strip():
            found.append(content.strip())
            if last_only:
                break
    found.reverse()
    return found


def _group_after(text: str, i: int) -> str | None:
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    if i >= n:
        return None
    if text[i] != "{":
        # `\boxed 5`: the next token up to whitespace or a math delimiter.
        m = re.match(r"[^\s$\\]+", text[i : i + MAX_ANSWER_CHARS])
        return m.group(0) if m else None
    depth, j = 0, i
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2  # an escaped character such as \{ never opens or closes a group
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
        j += 1
        if j - i > MAX_ANSWER_CHARS:
            return None
    return None  # unbalanced


def _after_phrase(region: str) -> str | None:
    last = None
    for last in _PHRASE_RE.finditer(region):
        pass
    if last is None:
        return None
    rest = region[last.end() : last.end() + MAX_ANSWER_CHARS]
    boxed = find_boxed(rest)
    if boxed:
        return boxed[-1]
    spans = _math_spans(rest)
    if spans and rest.lstrip().startswith(("$", "\\(", "\\[")):
        return spans[0]
    line = rest.split("\n", 1)[0].strip()
    line = re.sub(r"\.\s.*$", "", line)  # up to the end of the sentence
    return line.strip(" *.") or None


def _math_spans(text: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None).strip() for m in _MATH_SPAN_RE.finditer(text)]


def extract_answer(completion: str) -> Extraction:
    region, source = answer_region(completion)
    if region is None:
        return Extraction(None, source)
    tail = region[-_TAIL_CHARS:]
    boxed = find_boxed(tail)
    if boxed:
        return Extraction(boxed[-1], "boxed", tail)
    phrase = _after_phrase(tail)
    if phrase:
        return Extraction(phrase, "phrase", tail)
    bolds = _BOLD_RE.findall(tail)
    if bolds:
        return Extraction(bolds[-1].strip(), "bold", tail)
    if source == "answer_tag" and 0 < len(tail.strip()) <= MAX_ANSWER_CHARS:
        return Extraction(tail.strip(), "answer_tag", tail)
    last_par = tail.strip().rsplit("\n\n", 1)[-1]
    spans = _math_spans(last_par)
    if spans:
        return Extraction(spans[-1], "math_span", tail)
    numbers = _NUMBER_RE.findall(last_par) or _NUMBER_RE.findall(tail)
    if numbers:
        return Extraction(numbers[-1].rstrip(","), "number", tail)
    return Extraction(None, "no_answer", tail)


def choice_letter(answer: str | None, region: str = "") -> str | None:
    r"""A multiple-choice letter A–J from an extracted answer like `(B)`, `B.`, `\text{(C)}` or phrases."""
    if answer:
        plain = re.sub(r"\\text(?:bf)?\{([^{}]*)\}", r"\1", answer).replace("$", "").strip()
        m = _LETTER_RE.match(plain)
        if m:
            return m.group(1).upper()
        m = re.match(r"^\(?([A-J])[\).:]\s", plain)  # "(B) 42" or "B. 42"
        if m:
            return m.group(1)
    last = None
    for last in _LETTER_PHRASE_RE.finditer(region[-_TAIL_CHARS:]):
        pass
    return last.group(1).upper() if last else None

"""Find the final answer in an R1-style completion.

Order, as R1-style completions give answers:
1. The reasoning is never the answer: everything up to the last `</think>` is dropped, and a completion
   whose `<think>` never closes has no answer.
2. An `<answer>…</answer>` block narrows the search to its content (the last block; an unterminated one
   runs to the end).
3. The last `\\boxed{…}` or `\\fbox{…}` (braces balanced, `\\{` escapes honoured; `\\boxed 5` too), unless
   a "final answer is …" sentence comes after it (a model that boxes a step, then states its answer).
4. "final answer is …", "the answer is …", "Answer: …"; in a sentence ("The largest $n$ is 34.") the value
   after its last "is", or its last number.
5. The last markdown bold `**…**`.
6. Inside an answer block: the whole block. A reply that is only an expression (`\\frac{10}{9}`, `1 000`):
   all of it. Otherwise whichever comes last of the last math span (`$…$`, `\\(…\\)`, `\\[…\\]`) and the last
   number (`1,000.5`, `1 000`, `1,22`; a number inside a trailing `\\frac{…}{…}` is that fraction).
Multiple-choice letters are read from the extracted answer (or the answer phrases) by `choice_letter`.

Everything here is linear-time string scanning over a bounded tail of the text: no regex that can
backtrack catastrophically on adversarial input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from rewards.math_checker import MAX_ANSWER_CHARS
from rewards.math_checker.parse import GLUED_CONNECTIVE_RE

# Only the end of the answer region is searched; final answers live there and this bounds the work.
_TAIL_CHARS = 20_000
_MAX_BOXES = 64

_PHRASE_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*:?\s*",
    re.IGNORECASE,
)
_BOX_SEPARATOR_RE = re.compile(r"\b(?:and|or)\b|,|;")
_FINAL_PHRASE_RE = re.compile(r"final\s+answer\s*(?:is|:)", re.IGNORECASE)
_BOLD_RE = re.compile(r"\*\*([^*\n]{1,500})\*\*")
# An escaped `\\$` (a dollar amount) inside a span does not close it.
_MATH_SPAN_RE = re.compile(
    r"\$\$([^$]{1,1000})\$\$|(?<!\\)\$((?:\\\$|[^$]){1,1000}?)(?<!\\)\$"
    r"|\\\((.{1,1000}?)\\\)|\\\[(.{1,1000}?)\\\]", re.S)
# Thousands groups (`1,000`, `1 000`, `1{,}000`, `1,\\!000`), then a decimal point or comma, or a fraction;
# never glued to a word (`AZYUK2A` holds no answer).
_NUMBER_RE = re.compile(
    r"(?<![A-Za-z\d.])-?(?:[1-9]\d{0,2}(?:(?:,|\{,\}|,\\!\s?| )\d{3})+(?!\d)(?:\.\d+)?|\d+(?:,\d+)*(?:\.\d+)?(?:/\d+)?)"
    r"|(?<![A-Za-z\d])-?\.\d+"
)
_TRAILING_FRAC_RE = re.compile(r"-?\\[dt]?frac\s*\{[^{}]{1,100}\}\s*\{[^{}]{1,100}\}")
_PROSE_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
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
    for _, _, content in _boxes_from_right(text):
        if content is not None and content.strip():
            found.append(content.strip())
            if last_only:
                break
    found.reverse()
    return found


def joined_boxes(text: str, trusted: bool = False) -> str | None:
    r"""The last box joined with the boxes just before it that read as parts of one answer: `\boxed{1}\boxed{2}`
    and `\boxed{2} and \boxed{3}` give "1, 2" and "2, 3"; `\boxed{1} no no no no no \boxed{2}` gives "2".

    The rule is latex2sympy2_extended's `extract_boxed_content`, which Math-Verify uses: a gap under 10
    characters, or under 70 with and/or/,/; in it between different contents. Written out here because importing
    that package loads sympy (4 s) into the caller, and sympy runs only in the bounded child. `trusted` (a gold
    answer) reads an unclosed last box to the end, as the library does; a model's unclosed box is no answer.
    """
    parts: list[str] = []
    next_start = None
    for start, end, content in _boxes_from_right(text):
        if content is None:
            brace = text.find("{", start)
            if trusted and not parts and brace != -1:
                parts.append(text[brace + 1 : brace + 1 + MAX_ANSWER_CHARS].strip())
            break
        if next_start is not None:
            gap = text[end + 1 : next_start]
            apart = content.strip() == parts[-1] or len(gap) >= 70 or not _BOX_SEPARATOR_RE.search(gap)
            if len(gap) >= 10 and apart:
                break
        if content.strip() and (not parts or parts[-1] != content.strip()):
            parts.append(content.strip())
        next_start = start
    return ", ".join(reversed(parts)) if parts else None


def _boxes_from_right(text: str) -> Iterator[tuple[int, int, str | None]]:
    """(where the command starts, where its group closes, content or None if unbalanced), last box first."""
    pos = len(text)
    for _ in range(_MAX_BOXES):  # past this many broken boxes the text is garbage, not an answer
        i = max(text.rfind("\\boxed", 0, pos), text.rfind("\\fbox", 0, pos))
        if i == -1:
            return
        pos = i
        content, end = _group_after(text, i + (6 if text.startswith("\\boxed", i) else 5))
        yield i, end, content


def _group_after(text: str, i: int) -> tuple[str | None, int]:
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    if i >= n:
        return None, n
    if text[i] != "{":
        # `\boxed 5`: the next token up to whitespace or a math delimiter.
        m = re.match(r"[^\s$\\]+", text[i : i + MAX_ANSWER_CHARS])
        return (m.group(0), i + m.end() - 1) if m else (None, i)
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
                return text[i + 1 : j], j
        j += 1
        if j - i > MAX_ANSWER_CHARS:
            return None, j
    return None, n  # unbalanced


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):
        pass
    return last


def _after_phrase(region: str) -> str | None:
    last = _last_match(_PHRASE_RE, region)
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
    line = re.sub(r"\.\s.*$", "", line).strip(" *.")  # up to the end of the sentence
    if len(_PROSE_WORD_RE.findall(re.sub(r"\$[^$]*\$", "", line))) < 3:
        return line or None  # a short answer: "Evelyn", "12 apples", "x = 5"
    # A sentence: "The volume of $ABCD$ is 120" states its value after the last "is".
    tail = re.split(r"\s(?:is|are|equals)\s", line)[-1].strip()
    if len(_PROSE_WORD_RE.findall(tail)) < 3:
        return tail or None
    return _trailing_value(line) or line


def _math_spans(text: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None).strip() for m in _MATH_SPAN_RE.finditer(text)]


def _trailing_value(text: str) -> str | None:
    """Whichever ends last of the last math span and the last number outside spans."""
    span = _last_match(_MATH_SPAN_RE, text)
    plain = _MATH_SPAN_RE.sub(lambda m: " " * len(m.group(0)), text)  # keeps offsets
    number = _last_match(_NUMBER_RE, plain)
    if number is None or (span is not None and span.end() > number.end()):
        return next(g for g in span.groups() if g is not None).strip() if span else None
    frac = _last_match(_TRAILING_FRAC_RE, plain)
    if frac is not None and frac.start() <= number.start() and number.end() <= frac.end():
        return frac.group(0)  # `\\frac{10}{9}` written bare is the fraction, not its last digit
    return number.group(0).rstrip(",")


def _is_bare_expression(text: str) -> bool:
    # No words, only math: the whole reply is the answer.
    words = _PROSE_WORD_RE.search(GLUED_CONNECTIVE_RE.sub(",", text))  # `W(x)=1orW(x)=-1` has none
    return (0 < len(text) <= MAX_ANSWER_CHARS and not words and "\n\n" not in text
            and "\\boxed" not in text and "\\fbox" not in text)  # an unbalanced box is no answer


def extract_answer(completion: str) -> Extraction:
    region, source = answer_region(completion)
    if region is None:
        return Extraction(None, source)
    tail = region[-_TAIL_CHARS:]
    boxed = find_boxed(tail)
    if boxed:
        final = _last_match(_FINAL_PHRASE_RE, tail)
        if final is None or final.start() < tail.rfind(boxed[-1]):
            return Extraction(boxed[-1], "boxed", tail)
        phrase = _after_phrase(tail[final.start() :])
        return Extraction(phrase or boxed[-1], "phrase_after_box" if phrase else "boxed", tail)
    unclosed = max(tail.rfind("\\boxed"), tail.rfind("\\fbox"))
    if unclosed != -1:
        tail = tail[:unclosed]  # what a broken box holds is no answer; only the text before it may be
    phrase = _after_phrase(tail)
    if phrase:
        return Extraction(phrase, "phrase", tail)
    bolds = _BOLD_RE.findall(tail)
    if bolds:
        return Extraction(bolds[-1].strip(), "bold", tail)
    stripped = tail.strip()
    if (source == "answer_tag" and 0 < len(stripped) <= MAX_ANSWER_CHARS) or _is_bare_expression(stripped):
        return Extraction(stripped, source if source == "answer_tag" else "bare", tail)
    value = _trailing_value(stripped.rsplit("\n\n", 1)[-1]) or _trailing_value(tail)
    if value:
        return Extraction(value, "trailing", tail)
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

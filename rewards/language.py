"""`language`: DeepSeek-R1's language-consistency reward, Num(Words_target) / Num(Words) in the reasoning.

The reasoning is the `<think>` block (the whole completion when there is none). Words are counted by
script: every Han, kana or Hangul character counts as one word (CJK has no spaces); Latin, Cyrillic, Greek,
Arabic, Hebrew, Devanagari and Thai count per run of letters. Code blocks, inline code, math (`$…$`,
`\\(…\\)`, `\\[…\\]`), LaTeX commands, tags, URLs and numbers are ignored. A word belongs to the target
language when its script is the language's script (so English and French, which share a script, are not
told apart; the reward is about mixing scripts, as in R1). The target is the sample's `language` (ISO code
or English name), else the dominant script of the prompt, else `default_language`. Deterministic: no
statistical detector.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterator, Mapping

from rewards.base import RewardResult, as_text

_SCRIPTS = (  # (first, last, script) code point ranges, letters only
    (0x0041, 0x005A, "latin"), (0x0061, 0x007A, "latin"), (0x00C0, 0x024F, "latin"), (0x1E00, 0x1EFF, "latin"),
    (0x0370, 0x03FF, "greek"), (0x0400, 0x052F, "cyrillic"), (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"), (0x0900, 0x097F, "devanagari"), (0x0E00, 0x0E7F, "thai"),
    (0x1100, 0x11FF, "hangul"), (0x3040, 0x30FF, "kana"), (0x3130, 0x318F, "hangul"), (0x31F0, 0x31FF, "kana"),
    (0x3400, 0x4DBF, "han"), (0x4E00, 0x9FFF, "han"), (0xAC00, 0xD7AF, "hangul"), (0xF900, 0xFAFF, "han"),
    (0xFF66, 0xFF9F, "kana"), (0x20000, 0x2FA1F, "han"),
)
_PER_CHARACTER = {"han", "kana", "hangul"}
_LANGUAGE_SCRIPTS = {
    "zh": {"han"}, "ja": {"han", "kana"}, "ko": {"hangul"}, "ru": {"cyrillic"}, "uk": {"cyrillic"},
    "bg": {"cyrillic"}, "sr": {"cyrillic"}, "el": {"greek"}, "ar": {"arabic"}, "fa": {"arabic"}, "ur": {"arabic"},
    "he": {"hebrew"}, "hi": {"devanagari"}, "mr": {"devanagari"}, "ne": {"devanagari"}, "th": {"thai"},
}
_NAMES = {
    "english": "en", "chinese": "zh", "mandarin": "zh", "japanese": "ja", "korean": "ko", "russian": "ru",
    "ukrainian": "uk", "greek": "el", "arabic": "ar", "persian": "fa", "hebrew": "he", "hindi": "hi", "thai": "th",
    "french": "fr", "german": "de", "spanish": "es", "italian": "it", "portuguese": "pt", "vietnamese": "vi",
}
_SCRIPT_LANGUAGE = {"han": "zh", "kana": "ja", "hangul": "ko", "cyrillic": "ru", "greek": "el", "arabic": "ar",
                    "hebrew": "he", "devanagari": "hi", "thai": "th", "latin": "en"}
_IGNORED_RE = re.compile(
    r"```.*?(?:```|$)|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|\\\(.*?\\\)|\\\[.*?\\\]|<[^<>\n]{0,100}>"
    r"|https?://\S+|\\[A-Za-z]+(?:\s*\{[^{}]*\})*",  # a LaTeX command with its arguments
    re.S,
)
_LETTERS_RE = re.compile(r"[^\W\d_]+")


def script_of(ch: str) -> str | None:
    cp = ord(ch)
    for first, last, script in _SCRIPTS:
        if first <= cp <= last:
            return script
    return None


def words(text: str) -> Iterator[str]:
    """The script of every word in `text` (one per CJK character), skipping code, math, tags and numbers."""
    for run in _LETTERS_RE.findall(_IGNORED_RE.sub(" ", text)):
        pending: str | None = None  # script of the alphabetic word being read
        for ch in run:
            script = script_of(ch)
            if script in _PER_CHARACTER:
                if pending:
                    yield pending
                    pending = None
                yield script  # type: ignore[misc]
            elif script != pending:
                if pending:
                    yield pending
                pending = script  # a new word starts where the script changes
        if pending:
            yield pending


def language_code(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    v = value.strip().lower()
    return _NAMES.get(v, re.split(r"[-_]", v)[0])


def target_scripts(code: str) -> set[str]:
    return _LANGUAGE_SCRIPTS.get(code, {"latin"})


def detect_language(text: str) -> str | None:
    counts = Counter(words(text))
    if not counts:
        return None
    if counts["kana"]:
        return "ja"  # kana only occurs in Japanese; its Han characters then count as Japanese too
    return _SCRIPT_LANGUAGE.get(counts.most_common(1)[0][0])


def prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):  # chat messages: the user's words decide
        return "\n".join(as_text(m.get("content")) for m in prompt if isinstance(m, Mapping) and m.get("role") == "user")
    return ""


def reasoning(completion: str) -> str:
    if "<think>" in completion:
        completion = completion.split("<think>", 1)[1]
    return completion.split("</think>", 1)[0]


class LanguageReward:
    """R1 language consistency: share of chain-of-thought words in the target language's script."""

    def __init__(self, default_language: str = "en", scope: str = "think") -> None:
        if scope not in ("think", "completion"):
            raise ValueError("language: scope must be 'think' or 'completion'.")
        self.default_language = language_code(default_language) or "en"
        self.scope = scope

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        text = as_text(completion)
        code = language_code(sample.get("language"))
        source = "sample"
        if code is None:
            code, source = detect_language(as_text(prompt_text(sample.get("prompt")), 200_000)), "prompt"
        if code is None:
            code, source = self.default_language, "default"
        counts = Counter(words(reasoning(text) if self.scope == "think" else text))
        total = sum(counts.values())
        details = {"language": code, "target_from": source, "words": total}
        if not total:
            return RewardResult(0.0, {**details, "note": "The reasoning has no words to judge."})
        target = sum(n for script, n in counts.items() if script in target_scripts(code))
        return RewardResult(target / total, {**details, "target_words": target})

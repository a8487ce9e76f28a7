"""`language`: DeepSeek-R1's language-consistency reward, Num(Words_target) / Num(Words) in the reasoning.

The reasoning is the `<think>` block (the whole completion when there is none), cut to `max_chars`
(`MAX_JUDGED_CHARS`; the cut is reported in `judged_chars`). Words are counted by script: every Han, kana or
Hangul character counts as one word (CJK has no spaces); Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari,
Thai and letters of any other script count per run of letters. Ignored, so that math and code never count
against the target: code blocks, inline code, math (`$…$`, `$$…$$`, `\\(…\\)`, `\\[…\\]`), LaTeX commands,
tags, URLs, numbers, code identifiers (`snake_case`, `x2`, `camelCase`, `name(`), math letters (`ℝ`, `𝑥`), and
lone letters of a script the target does not use (`x` in Chinese, `θ` in English: variables).

Which language a word is in, in two steps:
1. Its script, where the script decides (the fast path, and the whole of the rule before languages were
   told apart; `languages: []` or one language per script keeps exactly that): a word in a script the
   target does not use is not in the target language, and a word in a script that only the target uses
   among the candidate `languages` is. Han, kana and Hangul are always decided by script, since a
   statistical model adds nothing there: kana is Japanese, Hangul Korean, and Han is Japanese in a sentence
   with kana and Chinese in one without (when both are candidates and one is the target).
2. Otherwise (English against French, Russian against Ukrainian: the target shares its script with another
   candidate) the reasoning is cut into sentences and each sentence's words of that script are identified
   by py3langid (langid.py's naive Bayes over byte n-grams, ~140 language labels; its model ships inside
   the package, nothing is fetched at run time), restricted to the candidates that use the script. A
   sentence is identified only when it has `min_segment_words` words of two letters or more and the best
   language's log-likelihood beats the runner-up's by `min_margin`; any other sentence ("Wait.", "So x = 3.",
   "Quand la limite est 1.") takes the language of the sentence before it (the first ones: of the first
   identified one). When no sentence can be identified, all of them are tried together, and when even that
   cannot tell, the script decides, as in step 1.

The score, R1's metric, is the share of the reasoning's words in the target language; `details` carries it
as `target_share`, with the word counts by language (`words_by`) and `method` (`identifier` or `script`).
The target is the sample's `language` (ISO code or English name), else the language of the prompt's user
messages (the same two steps), else `default_language`. Deterministic. A reasoning that is mostly
undecodable bytes or control characters scores 0 with a `parse_error`.

Limits: a sentence is the unit, so a sentence that switches language midway counts whole for one of them;
names and loan words follow their sentence; a language outside `languages` is read as the closest candidate
of its script (so a Catalan chain of thought is mostly "es" or "fr" unless `ca` is a candidate).
"""

from __future__ import annotations

import copy
import functools
import re
import unicodedata
from collections import Counter
from typing import Any, Iterable, Iterator, Mapping, Sequence

from rewards.base import RewardResult, as_text, failure

# The reasoning beyond this many characters is not judged: it bounds the reward's time (about 0.2 s at this
# size on one core) and R1's longest chains of thought (32k tokens, ~130k characters) fit in it.
MAX_JUDGED_CHARS = 200_000
# The candidates when the YAML gives no `languages`: the target is added to them on every call.
DEFAULT_LANGUAGES = ("en", "zh", "ja", "ko", "ru", "uk", "fr", "de", "es", "it", "pt", "nl", "pl", "tr", "vi",
                     "ar", "fa", "hi")
# A sentence is identified when it has this many words of two letters or more, and py3langid's best
# log-likelihood beats the runner-up's by MIN_MARGIN (e^5: ~150 times likelier). Chosen on the labelled set
# (tests/unit/data/rewards/language_cases.jsonl, before its held-out cases were written): every misidentified
# sentence had a margin under 1.5, and most of the right ones over 4.
MIN_SEGMENT_WORDS = 2
MIN_MARGIN = 5.0
_HAN_SENTENCE = 4  # Han characters that make a sentence without kana Chinese

_SCRIPTS = (  # (first, last, script) code point ranges, letters only
    (0x0041, 0x005A, "latin"), (0x0061, 0x007A, "latin"), (0x00C0, 0x024F, "latin"), (0x1E00, 0x1EFF, "latin"),
    (0x0370, 0x03FF, "greek"), (0x0400, 0x052F, "cyrillic"), (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"), (0x0750, 0x077F, "arabic"), (0x0900, 0x097F, "devanagari"),
    (0x0E00, 0x0E7F, "thai"), (0x1100, 0x11FF, "hangul"), (0x1F00, 0x1FFF, "greek"),
    (0x2100, 0x214F, "math"), (0x3040, 0x30FF, "kana"), (0x3130, 0x318F, "hangul"), (0x31F0, 0x31FF, "kana"),
    (0x3400, 0x4DBF, "han"), (0x4E00, 0x9FFF, "han"), (0xAC00, 0xD7AF, "hangul"), (0xF900, 0xFAFF, "han"),
    (0xFB50, 0xFDFF, "arabic"), (0xFE70, 0xFEFF, "arabic"), (0xFF21, 0xFF3A, "latin"), (0xFF41, 0xFF5A, "latin"),
    (0xFF66, 0xFF9F, "kana"), (0x1D400, 0x1D7FF, "math"), (0x20000, 0x2FA1F, "han"),
)
_PER_CHARACTER = {"han", "kana", "hangul"}
_LANGUAGE_SCRIPTS = {
    "zh": {"han"}, "ja": {"han", "kana"}, "ko": {"hangul"}, "ru": {"cyrillic"}, "uk": {"cyrillic"},
    "bg": {"cyrillic"}, "sr": {"cyrillic"}, "mk": {"cyrillic"}, "be": {"cyrillic"}, "kk": {"cyrillic"},
    "ky": {"cyrillic"}, "mn": {"cyrillic"}, "tg": {"cyrillic"}, "tt": {"cyrillic"}, "ba": {"cyrillic"},
    "el": {"greek"}, "ar": {"arabic"}, "fa": {"arabic"}, "ur": {"arabic"}, "ps": {"arabic"}, "ug": {"arabic"},
    "he": {"hebrew"}, "hi": {"devanagari"}, "mr": {"devanagari"}, "ne": {"devanagari"}, "sa": {"devanagari"},
    "th": {"thai"}, "wuu": {"han"}, "yue": {"han"},
}
_NAMES = {
    "english": "en", "chinese": "zh", "mandarin": "zh", "japanese": "ja", "korean": "ko", "russian": "ru",
    "ukrainian": "uk", "greek": "el", "arabic": "ar", "persian": "fa", "hebrew": "he", "hindi": "hi", "thai": "th",
    "french": "fr", "german": "de", "spanish": "es", "italian": "it", "portuguese": "pt", "vietnamese": "vi",
    "dutch": "nl", "polish": "pl", "turkish": "tr", "indonesian": "id",
}
_SCRIPT_LANGUAGE = {"han": "zh", "kana": "ja", "hangul": "ko", "cyrillic": "ru", "greek": "el", "arabic": "ar",
                    "hebrew": "he", "devanagari": "hi", "thai": "th", "latin": "en"}
# Spans that are not prose. Each delimited span is bounded or cannot run past its next opener, so no input
# makes the substitution quadratic (`\\(` repeated 100k times took 166 s with a plain lazy `.*?`).
_IGNORED_RE = re.compile(
    r"```.*?(?:```|$)|`[^`\n]*`|\$\$(?:(?!\$\$).)*\$\$|\$[^$\n]*\$"
    r"|\\\((?:(?!\\[()]).)*\\\)|\\\[(?:(?!\\[\[\]]).)*\\\]|<[^<>\n]{0,100}>"
    r"|https?://\S+|\\[A-Za-z]+(?:\s*\{[^{}]*\})*"  # a LaTeX command with its arguments
    r"|(?a:\b\w*[_\d]\w*\b|\b[a-z]+[A-Z]\w*|\b[A-Za-z]\w*(?=\())",  # identifiers: snake_case, x2, camelCase, f(
    re.S,
)
_LETTERS_RE = re.compile(r"[^\W\d_]+")
_SEGMENT_END_RE = re.compile(r"[.!?;…](?=\s|$)|[。！？；\n]")
_JUNK_RE = re.compile(r"[\ufffd\x01-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_JUNK_SHARE = 0.1  # more than this share of undecodable/control characters: not text, a parse_error


@functools.lru_cache(maxsize=1 << 16)
def script_of(ch: str) -> str | None:
    cp = ord(ch)
    if cp < 0x80:
        return "latin" if ch.isalpha() else None
    for first, last, script in _SCRIPTS:
        if first <= cp <= last:
            return script
    return "other" if ch.isalpha() else None


def _words(text: str, cleaned: bool = False) -> Iterator[tuple[str, str]]:
    """(script, word) for every word of `text` (one per CJK character), skipping what `_IGNORED_RE` matches
    (already done when `cleaned`), numbers and math letters."""
    for run in _LETTERS_RE.findall(text if cleaned else _IGNORED_RE.sub(" ", text)):
        if run.isascii():  # the common case, decided without a look at each character
            yield "latin", run
            continue
        start, pending = 0, None  # the alphabetic word being read: where it starts, its script
        for i, ch in enumerate(run):
            script = script_of(ch)
            if script in _PER_CHARACTER or script != pending:
                if pending and pending != "math":
                    yield pending, run[start:i]
                start, pending = i, script  # a new word starts where the script changes
                if script in _PER_CHARACTER:
                    yield script, ch  # type: ignore[misc]
                    pending = None
        if pending and pending != "math":
            yield pending, run[start:]


def words(text: str) -> Iterator[str]:
    """The script of every word in `text` (one per CJK character), skipping code, math, tags and numbers, and
    lone letters outside CJK (`x`, `θ`: a variable more often than a word)."""
    for script, word in _words(text):
        if len(word) > 1 or script in _PER_CHARACTER:
            yield script


def language_code(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    v = value.strip().lower()
    head = re.split(r"[-_\s(,]", v)[0]  # zh-CN, pt_BR, "Chinese (Simplified)"
    return _NAMES.get(v) or _NAMES.get(head, head) or None


def target_scripts(code: str) -> set[str]:
    return _LANGUAGE_SCRIPTS.get(code, {"latin"})


@functools.lru_cache(maxsize=1)
def _full_identifier() -> Any:
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as exc:
        raise ValueError(f"language: telling apart languages that share a script needs the py3langid package "
                         f"(a runtime dependency of this project; `make setup` installs it): {exc}.") from exc
    return LanguageIdentifier.from_model_file(MODEL_FILE)  # ~0.7 s and ~70 MB, once per process


def known_languages() -> frozenset[str]:
    """The codes the identifier knows (py3langid's labels)."""
    return frozenset(_full_identifier().labels)


@functools.lru_cache(maxsize=64)
def _identifier(candidates: frozenset[str]) -> Any:
    restricted = copy.copy(_full_identifier())  # shares the model's arrays; set_languages rebinds, never mutates
    restricted.set_languages(sorted(candidates))
    return restricted


def identify(text: str, candidates: Iterable[str], min_margin: float = MIN_MARGIN) -> str | None:
    """The language of `text` among `candidates` (codes py3langid knows), or None when py3langid's best
    log-likelihood beats the runner-up's by less than `min_margin` (too little text to tell)."""
    ranked = _identifier(frozenset(candidates)).rank(text)
    if len(ranked) > 1 and ranked[0][1] - ranked[1][1] < min_margin:
        return None
    return ranked[0][0]


Segment = list[tuple[str, str]]


class _Judge:
    """Which language each word is in, for one target among candidate languages (see the module docstring)."""

    def __init__(self, target: str, candidates: Iterable[str], min_words: int, min_margin: float) -> None:
        self.target = target
        self.candidates = set(candidates) | {target}
        self.min_words = min_words
        self.min_margin = min_margin
        self.scripts = target_scripts(target)
        self.sharing: dict[str, set[str]] = {}  # script -> its candidates, where the script alone cannot decide
        for script in self.scripts - _PER_CHARACTER:
            langs = {c for c in self.candidates if script in target_scripts(c)}
            if len(langs) > 1:
                self.sharing[script] = langs
        self.unknown = bool(self.sharing) and target not in known_languages()
        if self.unknown:
            self.sharing = {}  # the identifier cannot name the target: the script decides
        # Chinese against Japanese, by sentence: kana only occurs in Japanese, and Japanese prose has kana in
        # nearly every sentence, so a sentence's Han characters are Japanese when it has kana and Chinese
        # when it has `_HAN_SENTENCE` Han characters and none (a statistical model adds nothing here).
        self.han_split = target in ("zh", "ja") and {"zh", "ja"} <= self.candidates

    def label(self, script: str) -> str:
        """The language of a word its script decides: the one candidate that writes in it, else the script."""
        if script in self.scripts:
            return self.target
        langs = [c for c in self.candidates if script in target_scripts(c)]
        if script == "han" and "ja" in langs and "zh" in langs:
            return "zh"  # Han without kana reads as Chinese
        return langs[0] if len(langs) == 1 else script

    def counts(self, segments: Sequence[Segment]) -> Counter[str]:
        """Words by language over the segments."""
        by_segment = {script: self._by_sentence(segments, script, lambda seg, s=script, langs=langs:
                                                self._identify(seg, s, langs))
                      for script, langs in self.sharing.items()}
        if self.han_split:
            by_segment["han"] = self._by_sentence(segments, "han", self._han)
        counts: Counter[str] = Counter()
        for i, segment in enumerate(segments):
            for script, word in segment:
                if len(word) == 1 and script not in self.scripts and script not in _PER_CHARACTER:
                    continue  # a lone letter of another script (`x` in Chinese, `θ` in English) is a variable
                counts[by_segment[script][i] if script in by_segment else self.label(script)] += 1
        return counts

    def _identify(self, segment: Segment, script: str, langs: set[str]) -> str | None:
        ws = [w for s, w in segment if s == script]
        if sum(len(w) > 1 for w in ws) < self.min_words:
            return None
        return identify(" ".join(ws), langs, self.min_margin)

    @staticmethod
    def _han(segment: Segment) -> str | None:
        if any(s == "kana" for s, _ in segment):
            return "ja"
        return "zh" if sum(s == "han" for s, _ in segment) >= _HAN_SENTENCE else None

    def _by_sentence(self, segments: Sequence[Segment], script: str, decide: Any) -> list[str]:
        """The language of `script`'s words in each segment: where `decide` cannot tell, the language of the
        segment before (for the first ones: of the next decided one); where no segment is decided, `decide`
        on them all together, else the target (the script decides)."""
        found = [decide(seg) if any(s == script for s, _ in seg) else None for seg in segments]
        decided = [lang for lang in found if lang is not None]
        if not decided:
            fill = decide([pair for seg in segments for pair in seg]) or self.target
            return [fill] * len(segments)
        last = decided[0]
        for i, lang in enumerate(found):
            last = lang if lang is not None else last
            found[i] = last
        return found  # type: ignore[return-value]


def segments_of(text: str) -> list[list[tuple[str, str]]]:
    """The (script, word) lists of the sentences of `text` (NFC), empty ones left out."""
    cleaned = _IGNORED_RE.sub(" ", unicodedata.normalize("NFC", text))
    return [seg for seg in (list(_words(part, cleaned=True)) for part in _SEGMENT_END_RE.split(cleaned)) if seg]


def detect_language(text: str, languages: Iterable[str] | None = DEFAULT_LANGUAGES,
                    min_words: int = MIN_SEGMENT_WORDS, min_margin: float = MIN_MARGIN) -> str | None:
    """The language of `text` (None: it has no words): its main script's language, told apart among
    `languages` by the identifier where they share that script (None: by script only) and it can tell."""
    pairs = list(_words(unicodedata.normalize("NFC", text)))
    counts = Counter(script for script, _ in pairs)
    if not counts:
        return None
    if counts["kana"]:
        return "ja"  # kana only occurs in Japanese; its Han characters then count as Japanese too
    script = counts.most_common(1)[0][0]
    langs = {c for c in languages or () if script in target_scripts(c)}
    if len(langs) == 1:
        return langs.pop()
    if len(langs) > 1 and script not in _PER_CHARACTER:
        langs &= known_languages()
        ws = [w for s, w in pairs if s == script]
        if len(langs) > 1 and sum(len(w) > 1 for w in ws) >= min_words:
            found = identify(" ".join(ws), langs, min_margin)
            if found:
                return found
    return _SCRIPT_LANGUAGE.get(script)


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
    """R1 language consistency: share of chain-of-thought words in the target language."""

    def __init__(self, default_language: str = "en", scope: str = "think", languages: Sequence[str] | None = None,
                 min_segment_words: int = MIN_SEGMENT_WORDS, min_margin: float = MIN_MARGIN,
                 max_chars: int = MAX_JUDGED_CHARS) -> None:
        if scope not in ("think", "completion"):
            raise ValueError("language: scope must be 'think' or 'completion'.")
        if isinstance(languages, str) or (languages is not None and not all(isinstance(x, str) for x in languages)):
            raise ValueError("language: languages must be a list of language codes, such as [en, zh, fr].")
        if not isinstance(min_segment_words, int) or min_segment_words < 1:
            raise ValueError("language: min_segment_words must be a positive integer.")
        if isinstance(min_margin, bool) or not isinstance(min_margin, (int, float)) or not min_margin >= 0:
            raise ValueError("language: min_margin must be a number >= 0 (a log-likelihood margin).")
        if not isinstance(max_chars, int) or max_chars < 1:
            raise ValueError("language: max_chars must be a positive integer.")
        self.default_language = language_code(default_language) or "en"
        self.scope = scope
        codes = [language_code(x) for x in (DEFAULT_LANGUAGES if languages is None else languages)]
        self.languages = tuple(dict.fromkeys(c for c in codes if c))
        self.min_words = min_segment_words
        self.min_margin = float(min_margin)
        self.max_chars = max_chars
        # The identifier is loaded here (once per process) when some candidates share a script, so that a
        # missing package or an unknown code is reported before a run, not per sample.
        shared = self._sharing(set(self.languages) | {self.default_language})
        if shared:
            unknown = sorted(shared - known_languages())
            if unknown:
                raise ValueError(f"language: the identifier does not know {', '.join(unknown)} (which share a "
                                 f"script with other languages); use ISO 639-1 codes such as en, fr, de.")

    @staticmethod
    def _sharing(codes: set[str]) -> set[str]:
        """The codes that share a script (other than Han, kana, Hangul) with another code."""
        by_script: dict[str, set[str]] = {}
        for code in codes:
            for script in target_scripts(code) - _PER_CHARACTER:
                by_script.setdefault(script, set()).add(code)
        return {c for langs in by_script.values() if len(langs) > 1 for c in langs}

    def __call__(self, completion: str, sample: Mapping[str, Any]) -> RewardResult:
        text = as_text(completion)
        code = language_code(sample.get("language"))
        source = "sample"
        if code is None:
            prompt = as_text(prompt_text(sample.get("prompt")), 20_000)
            code, source = detect_language(prompt, self.languages, self.min_words, self.min_margin), "prompt"
        if code is None:
            code, source = self.default_language, "default"
        judged = reasoning(text) if self.scope == "think" else text
        details: dict[str, Any] = {"language": code, "target_from": source}
        if len(judged) > self.max_chars:
            details["judged_chars"] = self.max_chars
            details["reasoning_chars"] = len(judged)
            judged = judged[: self.max_chars]
        junk = len(_JUNK_RE.findall(judged))
        if junk > _JUNK_SHARE * max(1, len(judged) - judged.count(" ")):
            return failure("parse_error", f"The reasoning is not text: {junk} of its {len(judged)} characters are "
                           "undecodable bytes or control characters.", **details, target_share=0.0)
        judge = _Judge(code, self.languages, self.min_words, self.min_margin)
        counts = judge.counts(segments_of(judged))
        total = sum(counts.values())
        details.update(words=total, method="identifier" if judge.sharing else "script")
        if judge.unknown:
            details["note"] = f"The identifier does not know '{code}': its words were told apart by script only."
        if not total:
            return RewardResult(0.0, {**details, "target_share": 0.0, "note": "The reasoning has no words to judge."})
        target = counts.get(code, 0)
        share = target / total
        return RewardResult(share, {**details, "target_words": target, "target_share": share,
                                    "words_by": dict(counts.most_common(8))})

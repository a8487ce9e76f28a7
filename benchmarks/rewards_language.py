"""The `language` reward on its labelled chains of thought: accuracy and cost per sample.

    python benchmarks/rewards_language.py [--cases tests/unit/data/rewards/language_cases.jsonl] [--repeat 3]

Each case is a completion and, per target language, the expected share of its reasoning's words in that
language (`targets`); a mixed case gives its parts by language and the expected share is counted from them.
A (case, target) pair is right when the score is within `--tolerance` of the label; the mean absolute error
over all pairs is given too. Cases tagged `heldout` were written after the reward's thresholds were fixed. Two rules are compared:
the reward as configured by default (languages told apart by py3langid) and `languages: []`, which leaves
only the script rule the reward had before (English and French both "Latin"). Throughput is cases/s over
the ordinary cases (not `hostile`), one process, after a warm-up that loads the identifier; the cost of
long chains of thought is timed separately. Prints Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rewards.language import LanguageReward, words

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASES = ROOT / "tests" / "unit" / "data" / "rewards" / "language_cases.jsonl"


def load_cases(path: Path) -> list[dict[str, Any]]:
    """The cases with `completion` built (from `repeat` pieces where given) and every target's label a number."""
    cases = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for case in cases:
        if "repeat" in case:
            case["completion"] = "".join(piece * n for piece, n in case["repeat"])
        if "parts" in case:
            counts: dict[str, int] = defaultdict(int)
            for lang, text in case["parts"]:
                counts[lang] += sum(1 for _ in words(text))
            total = sum(counts.values())
            case["targets"] = {t: counts[t] / total for t in case["targets"]}
    return cases


def score_all(reward: LanguageReward, cases: list[dict[str, Any]]) -> list[tuple[dict, str, float, float]]:
    return [(c, t, label, reward(c["completion"], {"language": t}).score) for c in cases
            for t, label in c["targets"].items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.1)
    args = parser.parse_args()

    t0 = time.perf_counter()
    ours = LanguageReward()  # loads the identifier
    load_s = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    script_only = LanguageReward(languages=[])
    cases = load_cases(args.cases)
    ordinary = [c for c in cases if c["tag"] != "hostile"]

    print(f"cases: {len(cases)} ({len(ordinary)} ordinary), (case, target) pairs: "
          f"{sum(len(c['targets']) for c in cases)}; tolerance {args.tolerance}; identifier load {load_s:.2f} s, "
          f"process max RSS after it {rss_mb:.0f} MiB\n")
    tags = sorted({c["tag"] for c in cases})
    print("| rule | " + " | ".join(tags) + " | all | mean abs. error | ordinary cases/s |")
    print("|---|" + "---|" * len(tags) + "---|---:|---:|")
    misses: dict[str, list[str]] = {}
    for name, reward in (("py3langid per sentence (default)", ours), ("script only (`languages: []`)", script_only)):
        rows = score_all(reward, cases)
        start = time.perf_counter()
        for _ in range(args.repeat):
            for c in ordinary:
                for t in c["targets"]:
                    reward(c["completion"], {"language": t})
        per_case = (time.perf_counter() - start) / args.repeat / sum(len(c["targets"]) for c in ordinary)
        cells = []
        for tag in tags + ["all"]:
            sel = [r for r in rows if tag == "all" or r[0]["tag"] == tag]
            right = sum(abs(s - lab) <= args.tolerance for _, _, lab, s in sel)
            cells.append(f"{right}/{len(sel)} ({100 * right / len(sel):.0f}%)")
        misses[name] = [f"{c['id']} target={t} label={lab:.2f} score={s:.2f}" for c, t, lab, s in rows
                        if abs(s - lab) > args.tolerance]
        mae = sum(abs(s - lab) for _, _, lab, s in rows) / len(rows)
        print(f"| {name} | " + " | ".join(cells) + f" | {mae:.3f} | {1 / per_case:.0f} |")

    print("\nlong chains of thought (default rule), seconds per sample:")
    sentence = ("Let me check the second case again, since the sum of the digits must be divisible by three. "
                "Nous vérifions ensuite le résultat en refaisant le calcul. ")
    for chars in (4_000, 30_000, 130_000, 1_000_000):
        text = "<think>" + sentence * (chars // len(sentence)) + "</think>"
        start = time.perf_counter()
        for _ in range(args.repeat):
            result = ours(text, {"language": "en"})
        print(f"  {chars:>9,} chars: {(time.perf_counter() - start) / args.repeat:.3f} s  "
              f"(share {result.score:.2f}, {result.details['words']} words judged)")
    for name, lines in misses.items():
        print(f"\nmisses, {name}: {len(lines)}")
        for line in lines:
            print("  " + line)


if __name__ == "__main__":
    main()

"""Where an RL gain comes from: per-operation pass@1 of checkpoints on the synthetic eval split.

For each checkpoint: greedy pass@1 by arithmetic operation, the sampled pass rate (n samples at temperature 1)
by operation, and how many problems had 0..n correct samples (problems with 1..n-1 give GRPO a contrast).
Also how the greedy answers were reached, each with its pass@1: worked out or bare (an empty think block; the
task's `worked` option), and for multiplications worked out, which method (`long`, or `tens` by place value;
the task's `mul_methods`).
Served by one RolloutWorker (vLLM) in this process, graded by the `math` reward, as the pipeline's eval does.

    PYTHONPATH=. python benchmarks/rl_gain_by_op.py RUN/cold_start/checkpoint RUN/reasoning_rl/checkpoint
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict

from orchestrator import loopback  # noqa: F401  (loopback-only Ray/vLLM settings, before they are imported)


def response_style(text: str, op: str) -> str:
    """"bare" (empty think block), else "worked"; multiplications worked out say "long" or "tens"."""
    thought = text.replace("<think>", "", 1).split("</think>")[0]
    if not thought.strip():
        return "bare"
    if op != "mul":
        return "worked"
    return "tens" if re.search(r"^\d+ = \d+ \+|, so \d+ \* ", thought, flags=re.M) else "long"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--problems", type=int, default=1000)
    ap.add_argument("--digits", type=int, default=2)
    ap.add_argument("--ops", nargs="+", default=None, help="operations of the eval split (default: all)")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from actors.rollout import RolloutWorker
    from actors.types import SamplingParams
    from orchestrator.config import RolloutEngineSpec
    from orchestrator.data.chat import encode_prompt
    from orchestrator.data.synthetic import make_split
    from rewards.registry import get_reward

    task = {"digits": args.digits} | ({"ops": tuple(args.ops)} if args.ops else {})
    rows = make_split("eval", args.problems, **task)
    grade = get_reward("math")
    worker = RolloutWorker(RolloutEngineSpec(max_model_len=512).settings(), threads=2)
    for path in args.checkpoints:
        tokenizer = AutoTokenizer.from_pretrained(path)
        worker.load(path, 0)
        prompts = [encode_prompt(tokenizer, r) for r in rows]
        entry = {}
        for label, n, temperature in (("greedy", 1, 0.0), ("sampled", args.n, 1.0)):
            spec = SamplingParams(n=n, temperature=temperature, max_tokens=args.max_tokens, seed=0, logprobs=False,
                                  stop_token_ids=[tokenizer.eos_token_id])
            per_prompt = defaultdict(list)
            for r in worker.generate(prompts, spec):
                per_prompt[r.prompt_index].append(r)
            by_op, by_style, rates = defaultdict(list), defaultdict(list), []
            for i, row in enumerate(rows):
                correct = [grade(s.text, row).score >= 1.0 for s in per_prompt[i]]
                by_op[row["op"]].append(sum(correct) / len(correct))
                rates.append(sum(correct))
                if n == 1:
                    by_style[response_style(per_prompt[i][0].text, row["op"])].append(correct[0])
            entry[label] = {"pass@1": round(sum(sum(v) for v in by_op.values()) / len(rows), 4),
                            "by_op": {op: round(sum(v) / len(v), 3) for op, v in sorted(by_op.items())}}
            if by_style:  # (problems, pass@1) per way the greedy answer was reached
                entry[label]["by_style"] = {k: (len(v), round(sum(v) / len(v), 3)) for k, v in sorted(by_style.items())}
            if n > 1:
                hist = Counter(rates)
                entry[label]["correct_of_n"] = {k: hist[k] for k in range(n + 1)}
                entry[label]["with_contrast"] = round(sum(1 for k in rates if 0 < k < n) / len(rows), 3)
        print(json.dumps({path: entry}), flush=True)
    counts = Counter(r["op"] for r in rows)
    print("problems by op:", dict(sorted(counts.items())))


if __name__ == "__main__":
    main()

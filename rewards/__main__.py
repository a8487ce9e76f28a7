"""Debug a reward on a dataset offline.

    python -m rewards list
    python -m rewards score NAME IN.jsonl --output OUT.jsonl [--args '{"timeout_s": 2}'] [--workers 2]

NAME is a built-in or registered name, an entry point, `package.module:function`, or an http(s) URL. Each
input line is a JSON object with `completion` plus what the reward reads (`answer` for math, `tests` for
code, …). Each output line, in input order, is that object plus `reward` (float) and `details` (object);
a line that is not a JSON object yields `reward: 0` and a `parse_error`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterator

from pydantic import ValidationError

from rewards.isolation.pool import RewardPool
from rewards.registry import describe_reward, list_rewards

_CHUNK = 256  # lines scored per pool call: bounds memory on large files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rewards", description="Rule-based rewards, offline.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the available reward names")
    score = sub.add_parser("score", help="score a JSONL file with one reward")
    score.add_argument("name")
    score.add_argument("input")
    score.add_argument("--output", required=True)
    score.add_argument("--args", default="{}", help="JSON object of keyword arguments for the reward")
    score.add_argument("--workers", type=int, default=1)
    score.add_argument("--deadline-s", type=float, default=60.0, help="hard wall-clock limit per line")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in list_rewards():
            print(f"{name:12s} {describe_reward(name)}")
        return 0
    try:
        kwargs = json.loads(args.args)
        if not isinstance(kwargs, dict):
            raise ValueError("--args must be a JSON object")
        spec = _spec(args.name, kwargs)
        pool = RewardPool([spec], num_procs=args.workers, deadline_s=args.deadline_s)
    except ValidationError as exc:  # a bad reward name or argument: say it in one line
        print("error: " + "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()), file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with pool, open(args.input, encoding="utf-8", errors="replace") as src, open(args.output, "w") as dst:
        for chunk in _chunks(src):
            _score_chunk(pool, chunk, dst)
    return 0


def _spec(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    if name.startswith(("http://", "https://")):
        return {"http": {"url": name, **kwargs}, "label": "reward"}
    key = "path" if ":" in name else "name"
    return {key: name, "args": kwargs, "label": "reward"}


def _chunks(lines: Any) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _score_chunk(pool: RewardPool, lines: list[str], dst: Any) -> None:
    rows: list[dict[str, Any] | None] = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        rows.append(row if isinstance(row, dict) else None)
    valid = [i for i, row in enumerate(rows) if row is not None]
    scored = pool.score([rows[i].get("completion") for i in valid], [rows[i] for i in valid])  # type: ignore[union-attr]
    by_line = dict(zip(valid, scored))
    for i, row in enumerate(rows):
        if row is None:
            out = {"reward": 0.0, "details": {"error": "parse_error", "message": "The line is not a JSON object."}}
        else:
            s = by_line[i]
            details = s.details.get("reward", s.details) if s.components else s.details
            out = {**row, "reward": s.total, "details": details}
        dst.write(json.dumps(out, ensure_ascii=False, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())

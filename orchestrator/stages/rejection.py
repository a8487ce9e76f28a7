"""The ``rejection_sampling`` stage: sample from a checkpoint, keep the good completions, write an SFT set.

R1's third stage: n completions per reasoning prompt from the RL checkpoint, graded by the rule rewards, with
the unreadable ones filtered out (mixed languages, code blocks where none belong, overlong chains of thought,
near-duplicates), then mixed with non-reasoning data for the second SFT round.

    prompts ──► RolloutWorker.generate   n samples per prompt, in rounds of ``chunk_prompts``
            ──► RewardWorker.score       per-domain rule rewards (the same routing as RL)
            ──► filters                  in order; the first rule that rejects a sample names the reason
            ──► mix                      rows of other datasets, ``ratio`` per kept row
            ──► data.jsonl               SFT rows + provenance; ``filter_report`` in the stage metrics

Each written row is ``{id, prompt | messages, response, domain, answer?, source: {...}, rewards: {...}}``:
``source`` says where it came from (stage, checkpoint, policy version, prompt id, sample index) so a curated
set can be traced back to the policy that wrote it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from actors.types import Rollout, SamplingParams
from orchestrator.config import RejectionSamplingStage, RSFilters
from orchestrator.data.chat import encode_prompt
from orchestrator.stages.context import StageContext, StageResult
from orchestrator.stages.fanout import by_prompt, generate_sharded, score_sharded
from rewards.base import infra_error
from rewards.language import reasoning, words

log = logging.getLogger(__name__)

_CODE_FENCE = re.compile(r"^\s*```", re.M)
_SPACES = re.compile(r"\s+")

# Rejection reasons in the order the rules run (`min_scores` reasons are the component names, between
# "incorrect" and "mixed_language").
REASONS = ("reward_error", "incorrect", "mixed_language", "truncated", "too_long", "code_block", "duplicate",
           "per_prompt_cap")


@dataclass(slots=True)
class Candidate:
    row: dict
    rollout: Rollout
    components: dict[str, float]
    error: str | None


def run(stage: RejectionSamplingStage, ctx: StageContext) -> StageResult:
    model_path = ctx.model_path(stage.model)
    tokenizer = ctx.tokenizer(model_path)
    rows = [row for ref in stage.data for row in ctx.rows(ref)]
    if stage.prompts is not None:
        rows = rows[: stage.prompts]
    limit = ctx.engine.max_model_len - stage.sampling.max_tokens
    prompts = [(row, ids) for row in rows if len(ids := encode_prompt(tokenizer, row)) <= limit]
    if len(prompts) < len(rows):
        log.warning("%s: %d of %d prompts leave no room for %d new tokens within max_model_len and are skipped",
                    stage.name, len(rows) - len(prompts), len(rows), stage.sampling.max_tokens)
    if not prompts:
        raise ValueError(f"Stage {stage.name!r} has no usable prompts.")
    source = _source(stage, ctx, model_path)
    log.info("%s: %d prompts x %d samples from %s (policy version %s)", stage.name, len(prompts), stage.n,
             source["checkpoint"], source["policy_version"])
    sampling = SamplingParams(n=stage.n, temperature=stage.sampling.temperature, top_p=stage.sampling.top_p,
                              max_tokens=stage.sampling.max_tokens, seed=None, logprobs=False,
                              stop_token_ids=[tokenizer.eos_token_id])
    curator = Curator(stage.filters, {s.component for s in stage.rewards}, stage.name)
    chunks = ChunkStore(ctx.dir / "chunks", ctx.fingerprint)
    starts = range(0, len(prompts), stage.chunk_prompts)
    done = chunks.finished(len(starts))
    t_gen = t_reward = 0.0
    for i in range(done):   # finished before a kill: replayed through the filters, not generated again
        saved = chunks.load(i)
        t_gen, t_reward = t_gen + saved["seconds"]["generate"], t_reward + saved["seconds"]["reward"]
        for group in _candidates(saved["candidates"], prompts):
            curator.add_prompt(group)
    if done:
        log.info("%s: resuming from chunk %d of %d", stage.name, done, len(starts))
    version = int(source["policy_version"])
    try:
        rollout = ctx.spawn_rollout()
        rewards = ctx.spawn_rewards(stage.rewards, stage.reward_deadline_s)
        rollout.call("load", str(model_path), version)
        if done:
            chunks.restore_rng(done - 1, rollout)
        bar = tqdm(total=len(prompts), initial=min(len(prompts), done * stage.chunk_prompts),
                   desc=f"{stage.name} (rejection sampling)", unit="prompt", mininterval=2.0, dynamic_ncols=True)
        for i, start in enumerate(starts):
            if i < done:
                continue
            chunk = prompts[start:start + stage.chunk_prompts]
            # Redone whole when a rollout or reward worker is lost: nothing the dead worker produced is kept.
            per_prompt, seconds = ctx.retrying(lambda: _sample_chunk(rollout, rewards, chunk, sampling),
                                               lambda rank: rollout.call_one(rank, "load", str(model_path), version))
            t_gen, t_reward = t_gen + seconds["generate"], t_reward + seconds["reward"]
            chunks.save(i, start, per_prompt, seconds, rollout)
            for group in per_prompt:
                curator.add_prompt(group)
            bar.update(len(chunk))
            bar.set_postfix(kept=curator.kept_count, refresh=False)
        bar.close()
    finally:
        ctx.hand_back()

    kept = [curator.sft_row(c, source, i) for i, c in enumerate(curator.kept)]
    mixed = _mix(stage, ctx, len(kept))
    out_rows = kept + mixed
    random.Random(ctx.seed * 7_919 + 17).shuffle(out_rows)
    path = ctx.dir / "data.jsonl"
    _write_jsonl(path, out_rows)
    report = curator.report(mixed_in=len(mixed))
    log.info("%s: kept %d of %d samples (%s), mixed in %d rows → %s", stage.name, report["kept"],
             report["candidates"], ", ".join(f"{k} {v}" for k, v in report["dropped"].items()) or "none dropped",
             len(mixed), path)
    metrics = {"prompts": len(prompts), "samples_per_prompt": stage.n, "rows": len(out_rows),
               "resumed_from_chunk": done, "restarts": ctx.restarts.report(),
               "prompts_with_kept": curator.prompts_with_kept, "filter_report": report,
               "kept_by_domain": dict(Counter(c.row.get("domain") or "math" for c in curator.kept)),
               "kept_response_tokens_mean": round(sum(len(c.rollout.response_ids) for c in curator.kept)
                                                  / max(1, len(curator.kept)), 1),
               "seconds": {"generate": round(t_gen, 1), "reward": round(t_reward, 1)},
               "source": source}
    ctx.metrics.log({"step": 0, **{k: v for k, v in metrics.items()
                                   if isinstance(v, (int, float)) and k != "resumed_from_chunk"}})
    return StageResult(metrics=metrics, artifacts={"data": ctx.relative(path)})


def _sample_chunk(rollout, rewards, chunk: list[tuple[dict, list[int]]], sampling: SamplingParams
                  ) -> tuple[list[list[Candidate]], dict]:
    """Generate and score one chunk of prompts: candidates grouped by prompt, and the seconds each phase took."""
    t0 = time.perf_counter()
    groups = by_prompt(generate_sharded(rollout, [ids for _, ids in chunk], sampling))
    t1 = time.perf_counter()
    per_prompt = [[Candidate(row, r, {}, None) for r in groups[j]] for j, (row, _) in enumerate(chunk)]
    candidates = [c for group in per_prompt for c in group]
    samples = [{**c.row, "response_length": len(c.rollout.response_ids), "finish_reason": c.rollout.finish_reason}
               for c in candidates]
    scores = score_sharded(rewards, [c.rollout.text for c in candidates], samples)
    for c, components, details in zip(candidates, scores.components, scores.details):
        c.components = components
        c.error = _infra_error(details)
    return per_prompt, {"generate": t1 - t0, "reward": time.perf_counter() - t1}


class ChunkStore:
    """Finished generation rounds of one stage run, so a re-run after a kill resumes by chunk.

    ``chunks/chunk-I.json`` holds chunk I's scored candidates (prompt index, rollout, reward components) and its
    timing; ``chunk-I.rng-K.pt`` rollout engine K's RNG state after it, so the next chunk samples as it would have.
    The RNG files are written first and the JSON last, atomically: a chunk counts as finished once its JSON exists.
    ``chunks/fingerprint`` ties them to one stage configuration; under another they are discarded."""

    def __init__(self, root: Path, fingerprint: str):
        self.root = root
        stamp = root / "fingerprint"
        if not stamp.exists() or stamp.read_text() != fingerprint:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            stamp.write_text(fingerprint)

    def finished(self, total: int) -> int:
        """How many chunks, counted from the first, are finished (a later one alone does not count)."""
        done = 0
        while done < total and (self.root / f"chunk-{done}.json").exists():
            done += 1
        return done

    def load(self, i: int) -> dict:
        return json.loads((self.root / f"chunk-{i}.json").read_text())

    def save(self, i: int, start: int, per_prompt: list[list[Candidate]], seconds: dict, rollout) -> None:
        for k, state in enumerate(rollout.call("rng_state")):
            torch.save(state, self.root / f"chunk-{i}.rng-{k}.pt")
        record = {"seconds": seconds, "candidates": [
            {"prompt": start + j, "rollout": asdict(c.rollout), "components": c.components, "error": c.error}
            for j, group in enumerate(per_prompt) for c in group]}
        tmp = self.root / f"chunk-{i}.json.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.root / f"chunk-{i}.json")

    def restore_rng(self, i: int, rollout) -> None:
        files = [self.root / f"chunk-{i}.rng-{k}.pt" for k in range(len(rollout.actors))]
        if all(f.exists() for f in files):
            rollout.call_each("set_rng_state", [(torch.load(f, weights_only=False),) for f in files])
        else:
            log.warning("%s: no RNG state for %d rollout engines: sampling continues from fresh generators",
                        self.root, len(rollout.actors))


def _candidates(saved: list[dict], prompts: list[tuple[dict, list[int]]]) -> list[list[Candidate]]:
    """A saved chunk's candidates, grouped by prompt in the order they were generated."""
    groups: dict[int, list[Candidate]] = {}
    for c in saved:
        groups.setdefault(c["prompt"], []).append(
            Candidate(prompts[c["prompt"]][0], Rollout(**c["rollout"]), c["components"], c["error"]))
    return list(groups.values())


def _infra_error(details: dict) -> str | None:
    """The kind of failure, if the reward could not grade the sample: such samples are dropped as "reward_error"
    rather than counted as incorrect (they say nothing about the sample)."""
    found = infra_error(details)
    return found[0] if found else None


def _source(stage: RejectionSamplingStage, ctx: StageContext, model_path: Path) -> dict:
    """Where the samples come from: the checkpoint and, for an earlier stage's output, its policy version
    (optimizer steps taken by that stage)."""
    version = 0
    if stage.model.from_ is not None:
        metrics = (ctx.run.status(stage.model.from_) or {}).get("metrics", {})
        version = int(metrics.get("optimizer_steps", metrics.get("steps", 0)) or 0)
    checkpoint = str(stage.model.from_ or stage.model.name)
    return {"stage": stage.name, "checkpoint": checkpoint, "policy_version": version}


class Curator:
    """Applies the filters to each prompt's samples as they arrive and counts why samples were dropped."""

    def __init__(self, filters: RSFilters, components: set[str], stage_name: str):
        self.filters = filters
        self.correct = [c for c in filters.correct if c in components]
        self.kept: list[Candidate] = []
        self.candidates = 0
        self.prompts_with_kept = 0
        self.dropped: Counter[str] = Counter()
        self.stage_name = stage_name

    @property
    def kept_count(self) -> int:
        return len(self.kept)

    def add_prompt(self, group: list[Candidate]) -> None:
        """Filter one prompt's samples (dedup and the per-prompt cap work within the group)."""
        seen: set[str] = set()
        kept = 0
        for c in group:
            self.candidates += 1
            reason = self.reject_reason(c)
            if reason is None and self.filters.dedup:
                key = _SPACES.sub(" ", c.rollout.text.lower()).strip()
                reason = "duplicate" if key in seen else None
                seen.add(key)
            if reason is None and kept >= self.filters.max_per_prompt:
                reason = "per_prompt_cap"
            if reason is None:
                kept += 1
                self.kept.append(c)
            else:
                self.dropped[reason] += 1
        self.prompts_with_kept += kept > 0

    def reject_reason(self, c: Candidate) -> str | None:
        """The first per-sample rule that rejects ``c`` (dedup and the per-prompt cap need the group)."""
        f = self.filters
        if c.error is not None:
            return "reward_error"
        if any(c.components.get(name, 1.0) < 1.0 for name in self.correct):  # absent: does not apply here
            return "incorrect"
        for name, minimum in f.min_scores.items():
            if name in c.components and c.components[name] < minimum:
                return name
        if f.no_mixed_language and len(set(words(reasoning(c.rollout.text)))) > 1:
            return "mixed_language"
        if f.drop_truncated and c.rollout.finish_reason == "length":
            return "truncated"
        if f.max_response_tokens is not None and len(c.rollout.response_ids) > f.max_response_tokens:
            return "too_long"
        if f.no_code_blocks and (c.row.get("domain") != "code") and _CODE_FENCE.search(c.rollout.text):
            return "code_block"
        return None

    def sft_row(self, c: Candidate, source: dict, index: int) -> dict:
        row = c.row
        out: dict = {"id": f"{self.stage_name}-{index}"}
        if "messages" in row:
            out["messages"] = [*row["messages"], {"role": "assistant", "content": c.rollout.text}]
        else:
            out["prompt"] = row["prompt"]
            out["response"] = c.rollout.text
            if row.get("system"):
                out["system"] = row["system"]
        for key in ("domain", "answer", "language"):
            if key in row:
                out[key] = row[key]
        out["source"] = {**source, "prompt_id": row.get("id"), "policy_version": c.rollout.policy_version,
                         "response_tokens": len(c.rollout.response_ids)}
        out["rewards"] = {k: round(v, 4) for k, v in c.components.items()}
        return out

    def report(self, mixed_in: int) -> dict:
        order = {r: i for i, r in enumerate(REASONS)}
        dropped = dict(sorted(self.dropped.items(), key=lambda kv: (order.get(kv[0], 1.5), kv[0])))
        return {"candidates": self.candidates, "kept": len(self.kept), "dropped": dropped, "mixed_in": mixed_in}


def _mix(stage: RejectionSamplingStage, ctx: StageContext, kept: int) -> list[dict]:
    """``ratio`` rows of each mix dataset per kept row, drawn without replacement (all of them if too few)."""
    out: list[dict] = []
    for j, mix in enumerate(stage.mix):
        rows = [r for r in ctx.rows(mix.data) if "response" in r or "messages" in r]
        want = round(mix.ratio * kept)
        if want > len(rows):
            log.warning("%s: mix %s has %d SFT rows, fewer than the %d asked for (ratio %.2f); using all",
                        stage.name, mix.data, len(rows), want, mix.ratio)
        chosen = random.Random(ctx.seed * 1_000_003 + j).sample(rows, min(want, len(rows)))
        out += [{**r, "source": {"dataset": str(mix.data), "row_id": r.get("id")}} for r in chosen]
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)

"""The ``rl`` stage: GRPO with vLLM rollout workers, reward workers and DeepSpeed trainers.

One step, as the driver runs it (docs: orchestrator/algorithms/ for the maths, actors/weight_sync.py for the
transfer):

    prompts ──► RolloutWorker.generate      n completions per prompt, token ids, engine logprobs, version v
            ──► RewardWorker.score          per-sample routing by `domain`, weighted components
            ──► advantages                  group-normalised; dynamic sampling refills contrast-free groups
            ──► PolicyTrainer.logprobs      old logprobs, only when a batch spans several optimizer steps
            ──► PolicyTrainer.rl_step       clipped surrogate (+ KL, entropy), once per mini-batch
            ──► weight_sync                 trainer → every rollout worker, version v + 1

The loop is synchronous (generation waits for the last update), so every rollout is on-policy up to
``sync_every - 1`` versions; the lag is logged. Every phase is timed; what no phase covers (batch building,
Ray round trips, metrics) is reported as ``overhead_s``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from actors.types import Rollout, SamplingParams
from actors.weight_sync import in_memory_sync_problem, sync_weights
from actors.weight_sync_nccl import WeightPlan, init_nccl_sync, nccl_available, sync_weights_nccl
from orchestrator.algorithms.grpo import compute_advantages
from orchestrator.algorithms.packing import TrainSequence, shard, unshard
from orchestrator.algorithms.sampling import filter_groups, refill, select_groups, split_minibatches
from orchestrator.checkpoints import Checkpoint
from orchestrator.cluster import ActorGroup
from orchestrator.config import ClusterSpec, RLStage
from orchestrator.references import nccl_gpu_problem
from orchestrator.data.chat import encode_prompt
from orchestrator.stages.context import StageContext, StageResult
from orchestrator.stages.eval import evaluate
from orchestrator.stages.fanout import by_prompt, generate_sharded, score_sharded

log = logging.getLogger(__name__)

PHASES = ("generate", "reward", "logprob", "train", "sync")


# ---------------------------------------------------------------------------------------------- prompts
class PromptSampler:
    """Endless shuffled passes over the prompt rows; its state (pass, position) is part of a checkpoint."""

    def __init__(self, rows: list[dict], seed: int):
        if not rows:
            raise ValueError("The RL stage has no prompts to sample from.")
        self.rows, self.seed, self.epoch, self.pos = rows, seed, 0, 0
        self._order = self._shuffled()

    def _shuffled(self) -> list[int]:
        order = list(range(len(self.rows)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, k: int) -> list[dict]:
        out = []
        while len(out) < k:
            if self.pos == len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._shuffled()
            out.append(self.rows[self._order[self.pos]])
            self.pos += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def restore(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._shuffled()


@dataclass
class Group:
    """One prompt and its n scored completions."""

    row: dict
    prompt_ids: list[int]
    rollouts: list[Rollout]
    rewards: list[float]
    components: list[dict[str, float]]


@dataclass
class StepBatch:
    groups: list[Group]
    all_groups: list[Group] = field(default_factory=list)
    """Every group generated for this step, before dynamic sampling kept some (== groups without it)."""
    drawn: int = 0
    rounds: int = 0
    exhausted: bool = False
    reward_errors: int = 0
    reward_timeouts: int = 0
    generated_tokens: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))


@contextmanager
def _timed(seconds: dict[str, float], phase: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[phase] += time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- the stage
def run(stage: RLStage, ctx: StageContext) -> StageResult:
    model_path = ctx.model_path(stage.model)
    tokenizer = ctx.tokenizer(model_path)
    prompts = _prompt_rows(stage, ctx, tokenizer)
    optimizer_steps = stage.steps * stage.grpo.mini_batches
    world = ctx.cluster.trainer.workers
    log.info("%s: %d prompts, %d steps of %d prompts x %d samples, %d optimizer step(s) each, %d trainer rank(s)",
             stage.name, len(prompts), stage.steps, stage.prompts_per_step, stage.grpo.n, stage.grpo.mini_batches,
             world)
    sync_mode = choose_weight_sync(stage, ctx.cluster, json.loads((Path(model_path) / "config.json").read_text()))
    groups: list[ActorGroup] = []
    try:
        trainers = ctx.spawn_trainers()
        groups.append(trainers)
        rollout = ctx.spawn_rollout(nccl_weight_transfer=sync_mode == "nccl")
        groups.append(rollout)
        rewards = ctx.spawn_rewards(stage.rewards, stage.reward_deadline_s)
        groups.append(rewards)
        loss = stage.grpo.loss_settings(temperature=stage.sampling.temperature)
        info = trainers.call("setup", stage.train.settings(str(model_path), total_steps=optimizer_steps,
                                                           grad_accum=1, fp8=ctx.fp8(stage.model), loss=loss))[0]
        rollout.call("load", str(model_path), 0)
        # Once per stage, after the engines have loaded: vLLM attaches its NCCL receiver to the loaded model.
        nccl_plan = init_nccl_sync(trainers, rollout, stage.sync_bucket_mb) if sync_mode == "nccl" else None
        loop = GRPOLoop(stage, ctx, trainers, rollout, rewards, tokenizer, PromptSampler(prompts, stage.train.seed),
                        sync_mode, nccl_plan)
        if ctx.resume_from is not None:
            loop.restore(ctx.resume_from)
        summary = loop.run()
        final = ctx.dir / "checkpoint"
        trainers.call("save_hf", str(final))
        metrics = {"steps": stage.steps, "optimizer_steps": loop.version, "parameters": info["parameters"],
                   "zero_stage": info["zero_stage"], "world_size": world, "prompts": len(prompts),
                   "weight_sync": loop.sync_mode, "checkpoints": ctx.checkpoints.report(ctx.resume_from), **summary}
        result = StageResult(metrics=metrics, artifacts={"checkpoint": ctx.relative(final)})
        if stage.eval is not None:  # the rollout workers already serve the final weights
            result.eval = evaluate(rollout, tokenizer, ctx.eval_rows(stage.eval), stage.eval, seed=ctx.seed)
            ctx.write_eval(result.eval)
        return result
    finally:
        for group in reversed(groups):
            group.shutdown()


def _prompt_rows(stage: RLStage, ctx: StageContext, tokenizer) -> list[dict]:
    """Prompt rows whose prompt plus the generation budget fit the trainer's and the engine's length limits."""
    rows = [row for ref in stage.data for row in ctx.rows(ref)]
    limit = min(stage.train.max_seq_len, ctx.engine.max_model_len) - stage.sampling.max_tokens
    if limit <= 0:
        raise ValueError(f"Stage {stage.name!r}: sampling.max_tokens={stage.sampling.max_tokens} leaves no room "
                         f"for a prompt within min(train.max_seq_len, rollout.max_model_len).")
    kept = []
    for row in rows:
        ids = encode_prompt(tokenizer, row)
        if len(ids) <= limit:
            kept.append({**row, "_prompt_ids": ids})
    if len(kept) < len(rows):
        log.warning("%s: %d of %d prompts are longer than %d tokens and are skipped", stage.name,
                    len(rows) - len(kept), len(rows), limit)
    if len(kept) < stage.prompts_per_step:
        raise ValueError(f"Stage {stage.name!r}: only {len(kept)} usable prompts for prompts_per_step="
                         f"{stage.prompts_per_step}.")
    return kept


def choose_weight_sync(stage: RLStage, cluster: ClusterSpec, model_config: dict,
                       nccl_importable=nccl_available) -> str:
    """The stage's ``weight_sync`` resolved to "nccl", "object_store" or "checkpoint". ``auto``: NCCL when trainers
    and rollout workers have GPUs and vLLM's NCCL engine imports, else the object store where vLLM updates this model
    in place exactly (``model_config``: its config.json), else a checkpoint on disk."""
    where = f"Stage {stage.name!r}: "
    gpu_problem = nccl_gpu_problem(cluster.trainer.gpus, cluster.rollout.gpus)
    if stage.weight_sync == "nccl":
        if gpu_problem:
            raise ValueError(where + "weight_sync: " + gpu_problem + ".")
        if not nccl_importable():
            raise ValueError(where + "weight_sync: nccl needs vLLM's NCCL weight-transfer engine (vLLM 0.32 or later, "
                             "vllm.distributed.weight_transfer), which does not import here. Install it or choose "
                             "weight_sync: object_store or checkpoint.")
        return "nccl"
    if stage.weight_sync == "auto" and gpu_problem is None and nccl_importable():
        return "nccl"
    if stage.weight_sync == "checkpoint":
        return "checkpoint"
    problem = in_memory_sync_problem(model_config)
    if problem is None:
        return "object_store"
    if stage.weight_sync == "object_store":
        raise ValueError(where + f"weight_sync: object_store cannot update {problem} Choose weight_sync: checkpoint "
                         "(or auto).")
    return "checkpoint"


class GRPOLoop:
    """The steps of one RL stage over its actor groups: collect scored groups, train, sync, record."""

    def __init__(self, stage: RLStage, ctx: StageContext, trainers: ActorGroup, rollout: ActorGroup,
                 rewards: ActorGroup, tokenizer, sampler: PromptSampler, sync_mode: str,
                 nccl_plan: WeightPlan | None = None):
        self.stage, self.ctx, self.spec = stage, ctx, stage.grpo
        self.trainers, self.rollout, self.rewards = trainers, rollout, rewards
        self.tokenizer, self.sampler = tokenizer, sampler
        self.version = 0          # optimizer steps taken = the trainer's policy version
        self.served_version = 0   # the version the rollout workers serve
        self.trained_tokens = 0   # prompt + response tokens in the last step's batch
        self.sync_mode, self.nccl_plan = sync_mode, nccl_plan  # choose_weight_sync; init_nccl_sync's plan
        self.sampling = SamplingParams(n=stage.grpo.n, temperature=stage.sampling.temperature,
                                       top_p=stage.sampling.top_p, max_tokens=stage.sampling.max_tokens,
                                       seed=None, logprobs=True, stop_token_ids=[tokenizer.eos_token_id])
        self.dev_rows = []
        if stage.dev_eval is not None:
            self.dev_rows = ctx.rows(stage.dev_eval.data)[: stage.dev_eval.limit]
        self.step = 0             # the last step finished
        self.history: list[dict] = []
        self.dev_curve: list[dict] = []
        self.elapsed_before = 0.0  # seconds an earlier attempt spent on the steps a resume keeps

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        stage = self.stage
        history, dev_curve = self.history, self.dev_curve
        bar = tqdm(total=stage.steps, initial=self.step, desc=f"{stage.name} (rl)", unit="step", mininterval=2.0,
                   dynamic_ncols=True)
        t_start = time.perf_counter() - self.elapsed_before
        if self.dev_rows and self.step == 0:
            dev_curve.append(self._dev_eval(0, bar))
        for step in range(self.step + 1, stage.steps + 1):
            t0 = time.perf_counter()
            batch = self._collect(step)
            train_metrics = self._train(batch, step)
            if step % stage.sync_every == 0 or step == stage.steps:
                with _timed(batch.seconds, "sync"):
                    self._sync()
            record = self._record(step, batch, train_metrics, time.perf_counter() - t0, t_start)
            if self.dev_rows and (step % stage.dev_eval.every_steps == 0 or step == stage.steps):
                if self.served_version != self.version:
                    self._sync()
                dev = self._dev_eval(step, bar)
                dev_curve.append(dev)
                record["dev_pass@1"] = dev["dev_pass@1"]
            self.ctx.metrics.log(record, step=step)
            history.append(record)
            self.step = step
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward_mean']:.3f}", pass_rate=f"{record['pass_rate']:.2f}",
                            refresh=False)
            # Only where the engines serve the trainer's weights (always with sync_every 1): a resume then hands
            # them the checkpoint's weights and nothing else, and checkpointing never changes what is trained.
            if step < stage.steps and self.served_version == self.version and self.ctx.checkpoints.due(step):
                self._checkpoint(record["elapsed_s"])
        bar.close()
        return _summarise(history, dev_curve)

    # ------------------------------------------------------------------ rollouts
    def _collect(self, step: int) -> StepBatch:
        """Generate and score until the batch holds ``prompts_per_step`` groups (with dynamic sampling: groups
        with contrast, within ``max_refill_rounds`` extra rounds)."""
        spec, target = self.spec, self.stage.prompts_per_step
        batch = StepBatch(groups=[])
        draw = target
        while True:
            batch.groups += self._generate_and_score(self.sampler.take(draw), batch)
            batch.drawn += draw
            if not spec.dynamic_sampling:
                return batch
            rewards, ids = self._flat_rewards(batch.groups)
            keep = filter_groups(rewards, ids)
            kept = len(set(ids[keep].tolist()))
            nxt = refill(kept, target, batch.drawn, batch.rounds, spec.max_refill_rounds)
            if nxt.draw == 0:
                batch.exhausted, batch.all_groups = nxt.exhausted, list(batch.groups)
                chosen = set(ids[select_groups(keep, ids, target)].tolist())
                if not chosen:  # no contrast anywhere within the cap: train on what there is (zero advantage)
                    chosen = set(range(min(target, len(batch.groups))))
                batch.groups = [g for i, g in enumerate(batch.groups) if i in chosen]
                return batch
            batch.rounds += 1
            draw = nxt.draw

    def _generate_and_score(self, rows: list[dict], batch: StepBatch) -> list[Group]:
        prompts = [row["_prompt_ids"] for row in rows]
        with _timed(batch.seconds, "generate"):
            rollouts = generate_sharded(self.rollout, prompts, self.sampling)
        grouped = by_prompt(rollouts)
        samples, completions = [], []
        for i, row in enumerate(rows):
            for r in grouped[i]:
                completions.append(r.text)
                samples.append({k: v for k, v in row.items() if k != "_prompt_ids"}
                               | {"response_length": len(r.response_ids), "finish_reason": r.finish_reason})
        batch.generated_tokens += sum(len(r.response_ids) for r in rollouts)
        with _timed(batch.seconds, "reward"):
            scores = score_sharded(self.rewards, completions, samples)
        batch.reward_errors += scores.errors
        batch.reward_timeouts += scores.timeouts
        groups, k = [], 0
        for i, row in enumerate(rows):
            n = len(grouped[i])
            groups.append(Group(row, prompts[i], grouped[i], scores.scores[k:k + n], scores.components[k:k + n]))
            k += n
        return groups

    @staticmethod
    def _flat_rewards(groups: list[Group]) -> tuple[torch.Tensor, torch.Tensor]:
        rewards = torch.tensor([x for g in groups for x in g.rewards], dtype=torch.float64)
        ids = torch.tensor([i for i, g in enumerate(groups) for _ in g.rewards], dtype=torch.long)
        return rewards, ids

    # ------------------------------------------------------------------ training
    def _train(self, batch: StepBatch, step: int) -> list:
        spec, train = self.spec, self.stage.train
        rewards, ids = self._flat_rewards(batch.groups)
        # Old logprobs: with one optimizer step per batch the behaviour policy is the current one, so the loss
        # uses the current logprobs, detached (ratio 1) -- a recompute pass would return the same numbers.
        advantages = compute_advantages(rewards, ids, spec.advantage)
        seqs = []
        for rollout, adv in zip((r for g in batch.groups for r in g.rollouts), advantages.tolist()):
            seqs.append(TrainSequence(
                ids=rollout.prompt_ids + rollout.response_ids, response_start=len(rollout.prompt_ids),
                advantage=adv, trained=not (spec.mask_truncated and rollout.finish_reason == "length")
                and len(rollout.response_ids) > 0,
                rollout_logprobs=rollout.response_logprobs))
        world, pad_id = len(self.trainers.actors), self.tokenizer.pad_token_id
        with_rollout = all(s.rollout_logprobs is not None for s in seqs)
        with_old = spec.mini_batches > 1
        if with_old:  # the behaviour policy's logprobs, before this batch's first update
            with _timed(batch.seconds, "logprob"):
                shards = shard(seqs, world, train.micro_batch_size, pad_id, spec.loss_agg)
                per_rank = self.trainers.call_each("logprobs", [(b,) for b in shards])
                for s, old in zip(seqs, unshard(shards, per_rank, seqs)):
                    s.old_logprobs = old
        results = []
        # Dynamic sampling can end a step with fewer contrastive groups than mini-batches (refill cap reached):
        # then each group is its own mini-batch.
        mini_batches = min(spec.mini_batches, len(batch.groups))
        for part in split_minibatches(ids, mini_batches, seed=train.seed * 100_003 + step):
            chosen = [seqs[i] for i in part.tolist()]
            if not any(s.trained for s in chosen):
                continue  # nothing to learn from (all truncated and masked): no step, no version
            shards = shard(chosen, world, train.micro_batch_size, pad_id, spec.loss_agg, with_old, with_rollout)
            with _timed(batch.seconds, "train"):
                results.append(self.trainers.call_each("rl_step", [(b,) for b in shards])[0])
            self.version += 1
        batch.seconds["logprob"] += sum(r.extra.get("ref_seconds", 0.0) for r in results)
        batch.seconds["train"] -= sum(r.extra.get("ref_seconds", 0.0) for r in results)
        self.trained_tokens = sum(len(s.ids) for s in seqs)
        return results

    def _sync(self) -> None:
        if self.sync_mode == "nccl":
            sync_weights_nccl(self.trainers, self.rollout, self.version, self.nccl_plan)
        elif self.sync_mode == "object_store":
            sync_weights(self.trainers, self.rollout, self.version, self.stage.sync_bucket_mb)
        else:
            path = self.ctx.dir / "sync"
            self.trainers.call("save_hf", str(path))
            self.rollout.call("load", str(path), self.version)
        self.served_version = self.version

    def _dev_eval(self, step: int, bar) -> dict:
        t0 = time.perf_counter()
        score = evaluate(self.rollout, self.tokenizer, self.dev_rows, max_tokens=self.stage.sampling.max_tokens)
        bar.write(f"{self.stage.name}: step {step} held-out pass@1 {score['pass@1']:.3f} "
                  f"({len(self.dev_rows)} problems, {time.perf_counter() - t0:.0f} s)")
        return {"step": step, "dev_pass@1": score["pass@1"], "dev_mean_response_tokens": score["mean_response_tokens"]}

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, elapsed_s: float) -> None:
        """Trainer state (weights, optimizer, scheduler, RNG per rank), each engine's RNG, and the driver's side:
        the prompt sampler's position, the policy version and the dev curve (orchestrator/checkpoints.py)."""
        checkpoints = self.ctx.checkpoints
        tmp = checkpoints.begin(self.step)
        self.trainers.call("save_state", str(tmp / "trainer"))
        for i, state in enumerate(self.rollout.call("rng_state")):
            torch.save(state, tmp / f"rollout-{i}.pt")
        checkpoints.commit(tmp, self.step, {"sampler": self.sampler.state(), "version": self.version,
                                            "dev_curve": self.dev_curve, "elapsed_s": elapsed_s})

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue after ``checkpoint``'s step: the trainer's state, the same weights (and RNG) in every engine,
        the prompt sampler where it was, and the history that metrics.jsonl kept up to that step."""
        state = checkpoint.state
        versions = set(self.trainers.call("load_state", str(checkpoint.path / "trainer")))
        if versions != {state["version"]}:
            raise RuntimeError(f"{checkpoint.path}: the trainer state is at step(s) {sorted(versions)}, the driver's "
                               f"at policy version {state['version']}; the checkpoint is inconsistent.")
        self.step, self.version = checkpoint.step, state["version"]
        self._sync()
        engines = sorted(checkpoint.path.glob("rollout-*.pt"), key=lambda f: int(f.stem.split("-")[1]))
        if len(engines) == len(self.rollout.actors):
            self.rollout.call_each("set_rng_state", [(torch.load(f, weights_only=False),) for f in engines])
        else:
            log.warning("%s: the checkpoint holds %d rollout engines' RNG state, this run has %d engines: sampling "
                        "continues from fresh generators", self.stage.name, len(engines), len(self.rollout.actors))
        self.sampler.restore(state["sampler"])
        self.dev_curve = list(state["dev_curve"])
        self.history = [r for r in self.ctx.metrics.kept if "reward_mean" in r]
        self.elapsed_before = state["elapsed_s"]
        message = f"{self.stage.name}: resuming from step {checkpoint.step} of {self.stage.steps}"
        log.info(message)
        print(message, flush=True)

    # ------------------------------------------------------------------ metrics
    def _record(self, step: int, batch: StepBatch, results: list, seconds: float, t_start: float) -> dict:
        samples = [(r, x, c) for g in batch.groups for r, x, c in zip(g.rollouts, g.rewards, g.components)]
        rewards = [x for _, x, _ in samples]
        lengths = [len(r.response_ids) for r, _, _ in samples]
        passed = [self.stage.passed(c) for _, _, c in samples]
        record = {
            "step": step, "policy_version": self.version,
            "reward_mean": _mean(rewards), "reward_std": statistics.pstdev(rewards) if rewards else 0.0,
            "pass_rate": _mean(passed), "response_length_mean": _mean(lengths),
            "response_length_max": max(lengths, default=0),
            "truncated_fraction": _mean([r.finish_reason == "length" for r, _, _ in samples]),
            "policy_version_lag": _mean([self.version - len(results) - r.policy_version for r, _, _ in samples]),
            "groups": len(batch.groups), "prompts_drawn": batch.drawn, "refill_rounds": batch.rounds,
            "refill_exhausted": batch.exhausted, "reward_errors": batch.reward_errors,
            "reward_timeouts": batch.reward_timeouts,
            # Which prompts this step drew, in order: two runs (or a run and its resume) drew the same data exactly
            # when these agree.
            "prompts_digest": _digest(g.prompt_ids for g in batch.all_groups or batch.groups),
        }
        if batch.all_groups:  # dynamic sampling: the trained groups are a biased subset; these are all draws
            drawn = [(x, c) for g in batch.all_groups for x, c in zip(g.rewards, g.components)]
            record["drawn_reward_mean"] = _mean(x for x, _ in drawn)
            record["drawn_pass_rate"] = _mean(self.stage.passed(c) for _, c in drawn)
        by_component: dict[str, list[float]] = defaultdict(list)
        for _, _, c in samples:
            for name, value in c.items():
                by_component[name].append(value)
        for name, values in sorted(by_component.items()):
            record[f"reward/{name}_mean"] = _mean(values)
            record[f"reward/{name}_std"] = statistics.pstdev(values)
        if results:
            last = results[-1]
            record.update({"loss": last.loss, "grad_norm": last.grad_norm, "lr": last.lr})
            for key in ("clip_frac", "approx_kl", "kl", "entropy", "ratio_mean", "pg_loss", "rollout_logprob_diff",
                        "tis_weight_mean", "tis_capped_frac"):
                values = [r.extra[key] for r in results if key in r.extra]
                if values:
                    record[key] = _mean(values)
            record.update({k: v for k, v in last.extra.items() if k.startswith("moe/")})
        for phase in PHASES:
            record[f"{phase}_s"] = round(batch.seconds[phase], 3)
        record["step_s"] = round(seconds, 3)
        record["overhead_s"] = round(seconds - sum(batch.seconds.values()), 3)
        record["generate_tokens_per_s"] = round(batch.generated_tokens / max(batch.seconds["generate"], 1e-9), 1)
        record["train_tokens_per_s"] = round(self.trained_tokens / max(batch.seconds["train"], 1e-9), 1)
        record["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        return record


def _digest(prompts) -> str:
    h = hashlib.sha256()
    for ids in prompts:
        h.update(b",".join(str(i).encode() for i in ids) + b";")
    return h.hexdigest()[:12]


def _mean(xs) -> float:
    xs = list(xs)
    return float(sum(xs)) / len(xs) if xs else 0.0


def _summarise(history: list[dict], dev_curve: list[dict]) -> dict:
    """Stage-level metrics: first/last-window means of the learning signals and the mean time breakdown."""
    window = max(1, min(5, len(history) // 4 or 1))
    first, last = history[:window], history[-window:]
    out = {
        "reward_mean_first": round(_mean(r["reward_mean"] for r in first), 4),
        "reward_mean_last": round(_mean(r["reward_mean"] for r in last), 4),
        "pass_rate_first": round(_mean(r["pass_rate"] for r in first), 4),
        "pass_rate_last": round(_mean(r["pass_rate"] for r in last), 4),
        "response_length_last": round(_mean(r["response_length_mean"] for r in last), 1),
        "mean_step_s": {k: round(_mean(r[k] for r in history), 3)
                        for k in [f"{p}_s" for p in PHASES] + ["overhead_s", "step_s"]},
    }
    if dev_curve:
        out["dev_curve"] = dev_curve
    return out

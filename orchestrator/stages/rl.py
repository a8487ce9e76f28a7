"""The ``rl`` stage: GRPO with vLLM rollout workers, reward workers and DeepSpeed trainers.

One step, as the driver runs it (docs: orchestrator/algorithms/ for the maths, actors/weight_sync.py for the
transfer):

    prompts ──► RolloutWorker.generate      n completions per prompt, token ids, engine logprobs, version v
            ──► RewardWorker.score          per-sample routing by `domain`, weighted components
            ──► advantages                  group-normalised; dynamic sampling refills contrast-free groups
            ──► PolicyTrainer.logprobs      old logprobs, only when a batch spans several optimizer steps
            ──► PolicyTrainer.rl_step       clipped surrogate (+ KL, entropy), once per mini-batch
            ──► weight_sync                 trainer → every rollout worker, version v + 1

By default the loop is synchronous (generation waits for the last update), so every rollout is on-policy up to
``sync_every - 1`` versions. With ``async: {max_staleness: k}`` the trainer trains step t in a thread while the
driver generates and scores the batches of the next steps with the weights it last synced; a sample trained j steps
after it was generated is j versions old (j <= k), and the loss reweights it by truncated importance sampling
against the engine's logprobs. Rollout workers' parts are scored as each comes back, while the others still
generate. The lag is logged per step. Every phase is timed; what no phase covers (batch building, Ray round trips,
metrics) is reported as ``overhead_s``, and with async the seconds training hid of generation as ``overlap_s``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import torch
from tqdm import tqdm

from actors.types import Rollout, SamplingParams, TrainerSettings
from actors.weight_sync import in_memory_sync_problem, sync_weights
from actors.weight_sync_nccl import WeightPlan, init_nccl_sync, nccl_available, sync_weights_nccl
from orchestrator.algorithms.grpo import compute_advantages
from orchestrator.algorithms.packing import TrainSequence, shard, unshard
from orchestrator.algorithms.sampling import filter_groups, refill, select_groups, split_minibatches
from orchestrator.checkpoints import Checkpoint
from orchestrator.config import ClusterSpec, RLStage
from orchestrator.references import nccl_gpu_problem
from orchestrator.data.chat import encode_prompt
from orchestrator.stages.context import StageContext, StageResult
from orchestrator.stages.eval import dev_scores, evaluate
from orchestrator.stages.fanout import generate_and_score, ranks_agree
from orchestrator.stages.rl_step import Group, PromptSampler, StepBatch, StepTiming, step_record, summarise, timed
from rewards.base import infra_error

log = logging.getLogger(__name__)


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
    try:
        trainers = ctx.spawn_trainers()
        rollout = ctx.spawn_rollout(nccl_weight_transfer=sync_mode == "nccl")
        ctx.spawn_rewards(stage.rewards, stage.reward_deadline_s)
        loss = stage.grpo.loss_settings(temperature=stage.sampling.temperature)
        settings = stage.train.settings(str(model_path), total_steps=optimizer_steps, grad_accum=1,
                                        fp8=ctx.fp8(stage.model), loss=loss)
        info = trainers.call("setup", settings)[0]
        rollout.call("load", str(model_path), 0)
        # Once per stage, after the engines have loaded: vLLM attaches its NCCL receiver to the loaded model.
        nccl_plan = init_nccl_sync(trainers, rollout, stage.sync_bucket_mb) if sync_mode == "nccl" else None
        loop = GRPOLoop(stage, ctx, settings, tokenizer, PromptSampler(prompts, stage.train.seed), sync_mode,
                        nccl_plan)
        if ctx.resume_from is not None:
            loop.restore(ctx.resume_from)
        summary = loop.run()
        final = ctx.dir / "checkpoint"
        loop.trainers.call("save_hf", str(final))
        metrics = {"steps": stage.steps, "optimizer_steps": loop.version, "parameters": info["parameters"],
                   "zero_stage": info["zero_stage"], "world_size": world,
                   "rank_checksums": ranks_agree(loop.trainers), "prompts": len(prompts),
                   "weight_sync": loop.sync_mode, "checkpoints": ctx.checkpoints.report(ctx.resume_from), **summary}
        result = StageResult(metrics=metrics, artifacts={"checkpoint": ctx.relative(final)})
        if stage.eval is not None:  # the rollout workers already serve the final weights
            rows = ctx.eval_rows(stage.eval)
            result.eval = ctx.retrying(lambda: evaluate(ctx.groups["rollout"], tokenizer, rows, stage.eval,
                                                        seed=ctx.seed), loop.load_replacement)
            ctx.write_eval(result.eval)
        metrics["restarts"] = ctx.restarts.report()
        return result
    finally:
        ctx.hand_back()


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

    def __init__(self, stage: RLStage, ctx: StageContext, settings: TrainerSettings, tokenizer, sampler: PromptSampler,
                 sync_mode: str, nccl_plan: WeightPlan | None = None):
        self.stage, self.ctx, self.spec, self.settings = stage, ctx, stage.grpo, settings
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
            self.dev_rows = ctx.eval_rows(stage.dev_eval)
        self.step = 0             # the last step finished
        self.max_staleness = stage.async_.max_staleness if stage.async_ else 0
        self.pending: list[StepBatch] = []   # asynchronous: batches collected for the next steps, oldest first
        self._training = None                # asynchronous: the step training now (a Future)
        self.history: list[dict] = []
        self.dev_curve: list[dict] = []
        self.elapsed_before = 0.0  # seconds an earlier attempt spent on the steps a resume keeps

    # The stage's groups as they are now: a lost actor is replaced in place, a lost trainer rank replaces the group.
    trainers = property(lambda self: self.ctx.groups["trainer"])
    rollout = property(lambda self: self.ctx.groups["rollout"])
    rewards = property(lambda self: self.ctx.groups["reward"])

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        stage = self.stage
        bar = tqdm(total=stage.steps, initial=self.step, desc=f"{stage.name} (rl)", unit="step", mininterval=2.0,
                   dynamic_ncols=True)
        t_start = time.perf_counter() - self.elapsed_before
        if self.dev_rows and self.step == 0:
            self.dev_curve.append(self.ctx.retrying(lambda: self._dev_eval(0, bar), self.load_replacement, 0))
        while self.step < stage.steps:
            self.ctx.restarts.trainer_step(lambda: self._step(self.step + 1, bar, t_start),
                                           lambda: self._rebuild_trainers(bar), self.step + 1)
        bar.close()
        return summarise(self.history, self.dev_curve)

    def _step(self, step: int, bar, t_start: float) -> None:
        """One step. Generation and scoring are redone from the same prompts when a rollout or reward worker is lost;
        from training on, the step is never redone: a later loss replaces the actor and finishes what is left.
        Asynchronous: the step trains on a batch collected during an earlier step, and collects the next ones."""
        stage, t0 = self.stage, time.perf_counter()
        fresh = not self.pending
        batch = self._collect_retrying(step) if fresh else self.pending.pop(0)
        if self.max_staleness:
            train_metrics, ahead = self._train_while_collecting(batch, step)
        else:
            train_metrics, ahead = self._train(batch, step), []
        if step % stage.sync_every == 0 or step == stage.steps:
            with timed(batch.seconds, "sync"):
                self.ctx.retrying(self._sync, self.load_replacement, step)
        timing = StepTiming.of(batch, fresh, ahead, time.perf_counter() - t0)
        record = step_record(stage, step, batch, train_metrics, self.version, self.trained_tokens, timing, t_start)
        if self.dev_rows and (step % stage.dev_eval.every_steps == 0 or step == stage.steps):
            t_dev = time.perf_counter()
            if self.served_version != self.version:
                self.ctx.retrying(self._sync, self.load_replacement, step)
            dev = self.ctx.retrying(lambda: self._dev_eval(step, bar), self.load_replacement, step)
            self.dev_curve.append(dev)
            record["dev_pass@1"] = dev["dev_pass@1"]
            record["dev_eval_s"] = round(time.perf_counter() - t_dev, 3)
        record["restarts"] = len(self.ctx.restarts.events)
        self.ctx.metrics.log(record, step=step)
        self.history.append(record)
        self.step = step
        bar.update(1)
        bar.set_postfix(reward=f"{record['reward_mean']:.3f}", pass_rate=f"{record['pass_rate']:.2f}", refresh=False)
        # Only where the engines serve the trainer's weights (always with sync_every 1): a resume then hands them
        # the checkpoint's weights and nothing else, and checkpointing never changes what is trained.
        if step < stage.steps and self.served_version == self.version and self.ctx.checkpoints.due(step):
            self.ctx.retrying(lambda: self._checkpoint(record["elapsed_s"]), self.load_replacement, step)

    def _collect_retrying(self, step: int) -> StepBatch:
        """The scored batch of ``step``, drawn again from the same prompts if a worker is lost on the way."""
        before = self.sampler.state()

        def collect() -> StepBatch:
            self.sampler.restore(before)
            return self._collect(step)

        return self.ctx.retrying(collect, self.load_replacement, step)

    # ------------------------------------------------------------------ asynchronous steps
    # With `async: {max_staleness: k}` step t trains in a thread while this one collects the batches of steps t + 1
    # .. t + k (as many as are missing) from engines that serve version t - 1; the new weights reach the engines
    # only once both are done. So a batch trained at step t + j is j versions old, never more than k, and which
    # weights generated what is fixed by the schedule, not by timing: runs (and resumes) repeat exactly, as
    # synchronous ones do. A collected batch not yet trained is part of a checkpoint.
    def _train_while_collecting(self, batch: StepBatch, step: int) -> tuple[list, list[StepBatch]]:
        ahead: list[StepBatch] = []
        with ThreadPoolExecutor(1, thread_name_prefix="train") as pool:
            self._training = pool.submit(self._train, batch, step)
            try:
                while len(self.pending) < self.max_staleness and step + len(self.pending) < self.stage.steps:
                    ahead.append(self._collect_retrying(step + len(self.pending) + 1))
                    self.pending.append(ahead[-1])
            finally:
                wait([self._training])   # a failed collection never leaves a trainer call running behind it
                training, self._training = self._training, None
        return training.result(), ahead

    # ------------------------------------------------------------------ faults
    def load_replacement(self, rank: int) -> None:
        """Bring a new rollout engine up: the stage's model, then every engine gets the trainer's current weights
        (they served them already, unless sync_every > 1 left them a version or more behind). While a step trains
        asynchronously, after that step: the retried batch is then generated by the newest weights."""
        if self.sync_mode == "nccl":
            raise RuntimeError(f"Stage {self.stage.name!r}: a rollout engine was lost, and a new one cannot join the "
                               "stage's NCCL weight-sync group yet. Re-run the same command to resume from the last "
                               "checkpoint, or use weight_sync: object_store.")
        self.rollout.call_one(rank, "load", self.settings.model_path, 0)
        if self._training is not None:
            wait([self._training])   # its error, if any, is the step's to raise
        self._sync()

    def _rebuild_trainers(self, bar) -> None:
        """A trainer rank was lost: a new group, set up afresh, back at the last checkpoint (or the stage's start);
        the steps after it run again and metrics.jsonl keeps them once."""
        if self.sync_mode == "nccl":
            raise RuntimeError(f"Stage {self.stage.name!r}: a trainer rank was lost, and a new trainer group cannot "
                               "rebuild the NCCL weight-sync group yet. Re-run the same command to resume from the "
                               "last checkpoint.")
        checkpoint = self.ctx.rebuild_trainers(self.settings)
        # An engine whose sync the dead rank was feeding holds half-loaded weights: it is rebuilt (same fault).
        for rank, half_loaded in enumerate(self.ctx.retrying(lambda: self.rollout.call("sync_open"))):
            if half_loaded:
                self.ctx.replace("rollout", rank)
                self.rollout.call_one(rank, "load", self.settings.model_path, 0)
        if checkpoint is not None:
            self.restore(checkpoint)
        else:
            self._start_over()
        bar.n = self.step
        bar.refresh()

    def _start_over(self) -> None:
        self.step = self.version = 0
        self.pending = []
        self.sampler.restore({"epoch": 0, "pos": 0})
        # The step-0 dev score is the starting model's, which has not changed.
        self.history, self.elapsed_before = [], 0.0
        self.dev_curve = [d for d in self.dev_curve if d["step"] == 0]
        self.ctx.retrying(self._sync, self.load_replacement)
        log.info("%s: no checkpoint yet; starting over from step 0", self.stage.name)

    # ------------------------------------------------------------------ rollouts
    def _collect(self, step: int) -> StepBatch:
        """Generate and score until the batch holds ``prompts_per_step`` groups (with dynamic sampling: groups
        with contrast, within ``max_refill_rounds`` extra rounds)."""
        spec, target = self.spec, self.stage.prompts_per_step
        batch = StepBatch(groups=[])
        draw = target
        while True:
            batch.groups += self._generate_and_score(self.sampler.take(draw), batch, step)
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

    def _generate_and_score(self, rows: list[dict], batch: StepBatch, step: int) -> list[Group]:
        prompts = [row["_prompt_ids"] for row in rows]

        def to_score(part: list[Rollout]) -> tuple[list[str], list[dict]]:
            samples = [{k: v for k, v in rows[r.prompt_index].items() if k != "_prompt_ids"}
                       | {"response_length": len(r.response_ids), "finish_reason": r.finish_reason} for r in part]
            return [r.text for r in part], samples

        rollouts, scores = generate_and_score(self.rollout, self.rewards, prompts, self.sampling, to_score,
                                              batch.seconds)
        batch.generated_tokens += sum(len(r.response_ids) for r in rollouts)
        unscored = [found for found in map(infra_error, scores.details) if found]
        if rollouts and len(unscored) == len(rollouts):
            kinds = Counter(kind for kind, _ in unscored)
            raise RuntimeError(
                f"Stage {self.stage.name!r}: the rewards could not grade any of the {len(rollouts)} samples of step "
                f"{step} ({', '.join(f'{k} {v}' for k, v in kinds.items())}); first: {unscored[0][1]!r}. "
                "A step is never trained on rewards that all failed: fix the reward (or its data) and re-run.")
        batch.reward_errors += scores.errors
        batch.reward_timeouts += scores.timeouts
        batch.reward_unscored += len(unscored)
        of_prompt = defaultdict(list)   # prompt index -> positions in rollouts (and scores)
        for j, r in enumerate(rollouts):
            of_prompt[r.prompt_index].append(j)
        return [Group(row, prompts[i], [rollouts[j] for j in of_prompt[i]], [scores.scores[j] for j in of_prompt[i]],
                      [scores.components[j] for j in of_prompt[i]]) for i, row in enumerate(rows)]

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
            with timed(batch.seconds, "logprob"):
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
            with timed(batch.seconds, "train"):
                results.append(self.trainers.call_each("rl_step", [(b,) for b in shards])[0])
            self.version += 1
        batch.seconds["logprob"] += sum(r.extra.get("ref_seconds", 0.0) for r in results)
        batch.seconds["train"] -= sum(r.extra.get("ref_seconds", 0.0) for r in results)
        self.trained_tokens = sum(len(s.ids) for s in seqs)
        return results

    def _sync(self) -> None:
        """Every engine serves the trainer's current weights; the sync's seconds and bytes go to the telemetry."""
        if self.sync_mode == "nccl":
            done = sync_weights_nccl(self.trainers, self.rollout, self.version, self.nccl_plan)
        elif self.sync_mode == "object_store":
            done = sync_weights(self.trainers, self.rollout, self.version, self.stage.sync_bucket_mb)
        else:
            t0, path = time.perf_counter(), self.ctx.dir / "sync"
            self.trainers.call("save_hf", str(path))
            self.rollout.call("load", str(path), self.version)
            done = {"seconds": time.perf_counter() - t0,
                    "bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file())}
        self.served_version = self.version
        self.ctx.telemetry.weight_sync(done["seconds"], done["bytes"])

    def _dev_eval(self, step: int, bar) -> dict:
        t0 = time.perf_counter()
        score = evaluate(self.rollout, self.tokenizer, self.dev_rows, max_tokens=self.stage.sampling.max_tokens)
        record = {"step": step, **dev_scores(score), "dev_mean_response_tokens": score["mean_response_tokens"]}
        bar.write(f"{self.stage.name}: step {step} held-out pass@1 {record['dev_pass@1']:.3f} "
                  f"({len(self.dev_rows)} problems, {time.perf_counter() - t0:.0f} s)")
        return record

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, elapsed_s: float) -> None:
        """Trainer state (weights, optimizer, scheduler, RNG per rank), each engine's RNG, and the driver's side:
        the prompt sampler's position, the policy version and the dev curve (orchestrator/checkpoints.py)."""
        checkpoints = self.ctx.checkpoints
        tmp = checkpoints.begin(self.step)
        self.trainers.call("save_state", str(tmp / "trainer"))
        for i, state in enumerate(self.rollout.call("rng_state")):
            torch.save(state, tmp / f"rollout-{i}.pt")
        if self.pending:   # asynchronous: collected, scored, not trained yet (their prompts are drawn already)
            torch.save(self.pending, tmp / "pending.pt")
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
        engines = sorted(checkpoint.path.glob("rollout-*.pt"), key=lambda f: int(f.stem.split("-")[1]))
        if len(engines) == len(self.rollout.actors):
            def serve() -> None:   # the RNG last: loading and syncing draw from it
                self._sync()
                self.rollout.call_each("set_rng_state", [(torch.load(f, weights_only=False),) for f in engines])

            self.ctx.retrying(serve, self.load_replacement)
        else:
            self.ctx.retrying(self._sync, self.load_replacement)
            log.warning("%s: the checkpoint holds %d rollout engines' RNG state, this run has %d engines: sampling "
                        "continues from fresh generators", self.stage.name, len(engines), len(self.rollout.actors))
        self.sampler.restore(state["sampler"])
        pending = checkpoint.path / "pending.pt"
        self.pending = torch.load(pending, weights_only=False) if pending.exists() else []
        self.dev_curve = list(state["dev_curve"])
        self.history = [r for r in self.ctx.metrics.kept if "reward_mean" in r]
        self.elapsed_before = state["elapsed_s"]
        log.info("%s: resuming from step %d of %d", self.stage.name, checkpoint.step, self.stage.steps)

    # ------------------------------------------------------------------ metrics

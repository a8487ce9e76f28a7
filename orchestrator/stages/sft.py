"""The ``sft`` stage: supervised fine-tuning on conversations, assistant tokens only.

Used for the R1 cold start, for SFT on rejection-sampled data, and for distillation into a smaller model.
With ``early_stopping`` the stage evaluates on held-out prompts every few steps (the trainer writes a
candidate checkpoint, the rollout workers serve it) and keeps the best one: the cold start's plateau is the
baseline that RL must beat.
"""

from __future__ import annotations

import logging
import random
import shutil
import time

import torch
from tqdm import tqdm

from actors.types import SFTBatch
from orchestrator.cluster import ActorGroup
from orchestrator.config import SFTStage
from orchestrator.data.chat import SFTExample, encode_sft, pad_batch
from orchestrator.stages.context import StageContext, StageResult
from orchestrator.stages.eval import evaluate

log = logging.getLogger(__name__)


def _batches(examples: list[SFTExample], batch_size: int, steps: int, seed: int):
    """``steps`` global batches, reshuffling at every epoch; the incomplete tail of an epoch is dropped."""
    rng = random.Random(seed)
    order: list[int] = []
    for step in range(steps):
        if len(order) < batch_size:
            order = list(range(len(examples)))
            rng.shuffle(order)
        chosen, order = order[:batch_size], order[batch_size:]
        yield step, [examples[i] for i in chosen]


def _shard(batch: list[SFTExample], ranks: int, pad_id: int) -> list[SFTBatch]:
    global_tokens = sum(sum(e.loss_mask[1:]) for e in batch)
    per_rank = len(batch) // ranks
    out = []
    for r in range(ranks):
        ids, mask = pad_batch(batch[r * per_rank:(r + 1) * per_rank], pad_id)
        out.append(SFTBatch(torch.tensor(ids), torch.tensor(mask, dtype=torch.bool), global_tokens))
    return out


class _EarlyStopper:
    """Tracks the best held-out pass@1 and how many evaluations have passed without beating it."""

    def __init__(self, patience: int, min_delta: float, min_steps: int = 0):
        self.patience, self.min_delta, self.min_steps = patience, min_delta, min_steps
        self.best, self.best_step, self.bad, self.step = -1.0, -1, 0, 0
        self.history: list[dict] = []

    def update(self, step: int, score: float) -> bool:
        """Record a score; True if it is the new best."""
        self.history.append({"step": step, "pass@1": score})
        self.step = step
        if score > self.best + self.min_delta:
            self.best, self.best_step, self.bad = score, step, 0
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad >= self.patience and self.step >= self.min_steps


def run(stage: SFTStage, ctx: StageContext) -> StageResult:
    train = stage.train
    model_path = ctx.model_path(stage.model)
    tokenizer = ctx.tokenizer(model_path)
    rows = [row for ref in stage.data for row in ctx.rows(ref)]
    encoded = [encode_sft(tokenizer, r, train.max_seq_len) for r in rows]
    examples = [e for e in encoded if e is not None]
    if len(examples) < train.batch_size:
        raise ValueError(f"Stage {stage.name!r}: only {len(examples)} of {len(rows)} rows fit max_seq_len="
                         f"{train.max_seq_len} with an assistant turn; need at least batch_size={train.batch_size}.")
    world = ctx.cluster.trainer.workers
    grad_accum = train.batch_size // (train.micro_batch_size * world)
    steps = train.steps or max(1, int(train.epochs * len(examples) / train.batch_size))
    log.info("%s: %d examples (%d dropped as too long), %d steps of %d sequences on %d rank(s)", stage.name,
             len(examples), len(rows) - len(examples), steps, train.batch_size, world)

    trainers = ctx.spawn_trainers()
    rollout: ActorGroup | None = None
    try:
        info = trainers.call("setup", train.settings(str(model_path), total_steps=steps, grad_accum=grad_accum,
                                                     fp8=ctx.fp8(stage.model)))[0]
        stopper = None
        if stage.early_stopping is not None:
            rollout = ctx.spawn_rollout()
            stopper = _EarlyStopper(stage.early_stopping.patience, stage.early_stopping.min_delta,
                                    stage.early_stopping.min_steps)
        last = _train_loop(stage, ctx, trainers, rollout, stopper, examples, steps, tokenizer)
        final = ctx.dir / "checkpoint"
        if stopper is not None and stopper.best_step >= 0:
            shutil.rmtree(final, ignore_errors=True)
            (ctx.dir / "candidates" / f"step-{stopper.best_step}").rename(final)
            shutil.rmtree(ctx.dir / "candidates", ignore_errors=True)
        else:
            trainers.call("save_hf", str(final))
        metrics = {"steps": last["step"], "final_loss": last["loss"], "parameters": info["parameters"],
                   "examples": len(examples), "zero_stage": info["zero_stage"], "world_size": world}
        if stopper is not None:
            metrics.update({"best_step": stopper.best_step, "plateau_pass@1": stopper.best,
                            "early_stopping": stopper.history})
        result = StageResult(metrics=metrics, artifacts={"checkpoint": ctx.relative(final)})
        if stage.eval is not None:
            if rollout is None:
                rollout = ctx.spawn_rollout()
            rollout.call("load", str(final), last["step"])
            result.eval = evaluate(rollout, tokenizer, ctx.eval_rows(stage.eval), stage.eval, seed=ctx.seed)
            ctx.write_eval(result.eval)
        return result
    finally:
        trainers.shutdown()
        if rollout is not None:
            rollout.shutdown()


def _train_loop(stage, ctx, trainers, rollout, stopper, examples, steps, tokenizer) -> dict:
    train, es = stage.train, stage.early_stopping
    world, pad_id = len(trainers.actors), tokenizer.pad_token_id
    dev_rows = ctx.rows(es.data)[: es.limit] if es else []
    last: dict = {"step": 0, "loss": float("nan")}
    bar = tqdm(total=steps, desc=f"{stage.name} (sft)", unit="step", mininterval=2.0, dynamic_ncols=True)
    t_start = time.perf_counter()
    for step, batch in _batches(examples, train.batch_size, steps, train.seed):
        metrics = trainers.call_each("sft_step", [(b,) for b in _shard(batch, world, pad_id)])[0]
        last = {"step": metrics.step, "loss": metrics.loss}
        record = {"step": metrics.step, "loss": round(metrics.loss, 5), "grad_norm": round(metrics.grad_norm, 4),
                  "lr": metrics.lr, "tokens_per_s": round(metrics.tokens * world / metrics.seconds, 1),
                  "epoch": round((step + 1) * train.batch_size / len(examples), 3),
                  "elapsed_s": round(time.perf_counter() - t_start, 1), **metrics.extra}
        ctx.metrics.log(record, step=metrics.step)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics.loss:.3f}", refresh=False)
        if stopper is not None and (metrics.step % es.every_steps == 0 or metrics.step == steps):
            candidate = ctx.dir / "candidates" / f"step-{metrics.step}"
            trainers.call("save_hf", str(candidate))
            rollout.call("load", str(candidate), metrics.step)
            score = evaluate(rollout, tokenizer, dev_rows, max_tokens=(stage.eval.max_tokens if stage.eval
                                                                        else 256))["pass@1"]
            previous_best = stopper.best_step
            improved = stopper.update(metrics.step, score)
            ctx.metrics.log({"step": metrics.step, "dev_pass@1": score, "best_dev_pass@1": stopper.best},
                            step=metrics.step)
            bar.write(f"{stage.name}: step {metrics.step} held-out pass@1 {score:.3f} (best {stopper.best:.3f})")
            # Keep only the best candidate on disk.
            stale = ctx.dir / "candidates" / f"step-{previous_best}" if improved else candidate
            shutil.rmtree(stale, ignore_errors=True)
            if stopper.should_stop:
                bar.write(f"{stage.name}: no gain in {es.patience} evaluations; stopping at step {metrics.step}")
                break
    bar.close()
    return last

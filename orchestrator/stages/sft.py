"""The ``sft`` stage: supervised fine-tuning on conversations, assistant tokens only.

Used for the R1 cold start, for SFT on rejection-sampled data, and for distillation into a smaller model.
With ``early_stopping`` the stage evaluates on held-out prompts every few steps (the trainer writes a
candidate checkpoint, the rollout workers serve it) and keeps the best one: the cold start's plateau is the
baseline that RL must beat.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
import time

import torch
from tqdm import tqdm

from actors.types import SFTBatch, TrainerSettings
from orchestrator.checkpoints import Checkpoint
from orchestrator.config import SFTStage
from orchestrator.data.chat import SFTExample, encode_sft, pad_batch
from orchestrator.stages.context import StageContext, StageResult
from orchestrator.stages.eval import dev_scores, evaluate
from orchestrator.stages.fanout import ranks_agree

log = logging.getLogger(__name__)


class EpochBatches:
    """Global batches of example indices, reshuffled at every epoch; an epoch's incomplete tail is dropped. Its
    state (the shuffling RNG and what is left of the epoch) goes into a checkpoint, so a resumed stage trains on
    exactly the batches the uninterrupted one would have.

    With ``lengths`` (``train.group_by_length``) an epoch is grouped by length as Hugging Face's
    LengthGroupedSampler does: the shuffled order is cut into windows of ``GROUP_WINDOW`` batches, each window is
    sorted by length and cut into batches, and the batches are shuffled. A batch then holds sequences of similar
    length and pads to little, while every window still mixes the whole data.
    """

    GROUP_WINDOW = 64

    def __init__(self, num_examples: int, batch_size: int, seed: int, lengths: list[int] | None = None):
        self.num_examples, self.batch_size, self.lengths = num_examples, batch_size, lengths
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def next(self) -> list[int]:
        if len(self.order) < self.batch_size:
            self.order = list(range(self.num_examples))
            self.rng.shuffle(self.order)
            if self.lengths is not None:
                self.order = self._grouped(self.order)
        chosen, self.order = self.order[: self.batch_size], self.order[self.batch_size:]
        return chosen

    def _grouped(self, order: list[int]) -> list[int]:
        size, window = self.batch_size, self.batch_size * self.GROUP_WINDOW
        whole = order[: len(order) - len(order) % size]
        batches = []
        for start in range(0, len(whole), window):
            chunk = sorted(whole[start:start + window], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + size] for i in range(0, len(chunk), size)]
        self.rng.shuffle(batches)
        return [i for batch in batches for i in batch]

    def state(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"rng": [version, list(internal), gauss], "order": list(self.order)}

    def restore(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.order = list(state["order"])


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

    def state(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad, "step": self.step,
                "history": list(self.history)}

    def restore(self, state: dict) -> None:
        self.best, self.best_step, self.bad, self.step = state["best"], state["best_step"], state["bad"], state["step"]
        self.history = list(state["history"])


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

    settings = train.settings(str(model_path), total_steps=steps, grad_accum=grad_accum, fp8=ctx.fp8(stage.model))
    try:
        info = ctx.spawn_trainers().call("setup", settings)[0]
        stopper = None
        if stage.early_stopping is not None:
            ctx.spawn_rollout()
            stopper = _EarlyStopper(stage.early_stopping.patience, stage.early_stopping.min_delta,
                                    stage.early_stopping.min_steps)
        loop = _SFTLoop(stage, ctx, settings, stopper, examples, steps, tokenizer)
        if ctx.resume_from is not None:
            loop.restore(ctx.resume_from)
        last = loop.run()
        stopper, final = loop.stopper, ctx.dir / "checkpoint"
        if stopper is not None and stopper.best_step >= 0:
            shutil.rmtree(final, ignore_errors=True)
            (ctx.dir / "candidates" / f"step-{stopper.best_step}").rename(final)
            shutil.rmtree(ctx.dir / "candidates", ignore_errors=True)
        else:
            loop.trainers.call("save_hf", str(final))
        metrics = {"steps": last["step"], "final_loss": last["loss"], "parameters": info["parameters"],
                   "examples": len(examples), "zero_stage": info["zero_stage"], "world_size": world,
                   "rank_checksums": ranks_agree(loop.trainers),
                   "checkpoints": ctx.checkpoints.report(ctx.resume_from)}
        if stopper is not None:
            metrics.update({"best_step": stopper.best_step, "plateau_pass@1": stopper.best,
                            "early_stopping": stopper.history})
        result = StageResult(metrics=metrics, artifacts={"checkpoint": ctx.relative(final)})
        if stage.eval is not None:
            if "rollout" not in ctx.groups:
                ctx.spawn_rollout()
            rows = ctx.eval_rows(stage.eval)

            def final_eval() -> dict:
                ctx.groups["rollout"].call("load", str(final), last["step"])
                return evaluate(ctx.groups["rollout"], tokenizer, rows, stage.eval, seed=ctx.seed)

            result.eval = ctx.retrying(final_eval)
            ctx.write_eval(result.eval)
        metrics["restarts"] = ctx.restarts.report()
        return result
    finally:
        ctx.hand_back()


class _SFTLoop:
    """The steps of one SFT stage: train, evaluate a candidate every ``early_stopping.every_steps``, checkpoint."""

    def __init__(self, stage: SFTStage, ctx: StageContext, settings: TrainerSettings, stopper: _EarlyStopper | None,
                 examples: list[SFTExample], steps: int, tokenizer):
        self.stage, self.ctx, self.settings, self.stopper = stage, ctx, settings, stopper
        self.examples, self.steps, self.tokenizer = examples, steps, tokenizer
        self.batches = self._new_batches()
        self.step = 0
        self.last: dict = {"step": 0, "loss": float("nan")}
        es = stage.early_stopping
        self.dev_rows = ctx.eval_rows(es) if es else []

    def _new_batches(self) -> EpochBatches:
        train = self.stage.train
        lengths = [len(e.input_ids) for e in self.examples] if train.group_by_length else None
        return EpochBatches(len(self.examples), train.batch_size, train.seed, lengths)

    # The groups as they are now: a lost rollout worker is replaced in place, a lost trainer rank replaces the group.
    trainers = property(lambda self: self.ctx.groups["trainer"])
    rollout = property(lambda self: self.ctx.groups["rollout"])

    def run(self) -> dict:
        bar = tqdm(total=self.steps, initial=self.step, desc=f"{self.stage.name} (sft)", unit="step",
                   mininterval=2.0, dynamic_ncols=True)
        t_start = time.perf_counter()
        while self.step < self.steps:
            if self.ctx.restarts.trainer_step(lambda: self._step(bar, t_start), lambda: self._rebuild_trainers(bar),
                                              self.step + 1):
                break
        bar.close()
        return self.last

    def _step(self, bar, t_start: float) -> bool:
        """One optimizer step (and its evaluation, checkpoint); True when early stopping ends the stage."""
        stage, ctx, stopper, es = self.stage, self.ctx, self.stopper, self.stage.early_stopping
        world, pad_id = len(self.trainers.actors), self.tokenizer.pad_token_id
        batch = [self.examples[i] for i in self.batches.next()]
        metrics = self.trainers.call_each("sft_step", [(b,) for b in _shard(batch, world, pad_id)])[0]
        self.step = metrics.step
        self.last = {"step": metrics.step, "loss": metrics.loss}
        record = {"step": metrics.step, "loss": round(metrics.loss, 5), "grad_norm": round(metrics.grad_norm, 4),
                  "lr": metrics.lr, "tokens_per_s": round(metrics.tokens * world / metrics.seconds, 1),
                  "epoch": round(metrics.step * stage.train.batch_size / len(self.examples), 3),
                  "elapsed_s": round(time.perf_counter() - t_start, 1), **metrics.extra}
        if stopper is not None and (metrics.step % es.every_steps == 0 or metrics.step == self.steps):
            t_dev = time.perf_counter()
            scores = self._evaluate_candidate(metrics.step)
            score = scores["dev_pass@1"]
            record.update({**scores, "best_dev_pass@1": stopper.best,
                           "dev_eval_s": round(time.perf_counter() - t_dev, 3)})
            bar.write(f"{stage.name}: step {metrics.step} held-out pass@1 {score:.3f} (best {stopper.best:.3f})")
        ctx.metrics.log(record, step=metrics.step)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics.loss:.3f}", refresh=False)
        if stopper is not None and stopper.should_stop:
            bar.write(f"{stage.name}: no gain in {es.patience} evaluations; stopping at step {metrics.step}")
            return True
        if self.step < self.steps and ctx.checkpoints.due(self.step):
            self._checkpoint()
        return False

    def _evaluate_candidate(self, step: int) -> dict:
        """Save and score the current weights; their ``dev_scores`` (``dev_pass@1`` is the early-stopping score)."""
        candidate = self.ctx.dir / "candidates" / f"step-{step}"
        self.trainers.call("save_hf", str(candidate))
        max_tokens = self.stage.eval.max_tokens if self.stage.eval else 256

        def score() -> dict:   # redone from the load when a rollout worker is lost
            self.rollout.call("load", str(candidate), step)
            return evaluate(self.rollout, self.tokenizer, self.dev_rows, max_tokens=max_tokens)

        scores = dev_scores(self.ctx.retrying(score, step=step))
        self.stopper.update(step, scores["dev_pass@1"])
        self._prune_candidates()
        return scores

    def _rebuild_trainers(self, bar) -> None:
        """A trainer rank was lost: a new group, set up afresh, back at the last checkpoint (or the stage's start);
        the steps after it run again and metrics.jsonl keeps them once."""
        checkpoint = self.ctx.rebuild_trainers(self.settings)
        if checkpoint is not None:
            self.restore(checkpoint)
        else:
            self._start_over()
        bar.n = self.step
        bar.refresh()

    def _start_over(self) -> None:
        self.step, self.last = 0, {"step": 0, "loss": float("nan")}
        self.batches = self._new_batches()
        if self.stopper is not None:
            es = self.stage.early_stopping
            self.stopper = _EarlyStopper(es.patience, es.min_delta, es.min_steps)
            self._prune_candidates()
        log.info("%s: no checkpoint yet; starting over from step 0", self.stage.name)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self) -> None:
        checkpoints = self.ctx.checkpoints
        tmp = checkpoints.begin(self.step)
        self.trainers.call("save_state", str(tmp / "trainer"))
        checkpoints.commit(tmp, self.step, {
            "batches": self.batches.state(), "last": self.last,
            "stopper": self.stopper.state() if self.stopper is not None else None})
        self._prune_candidates()

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from ``checkpoint``: trainer state, data position, early stopping and its best candidate."""
        [self.step] = set(self.trainers.call("load_state", str(checkpoint.path / "trainer")))
        state = checkpoint.state
        self.batches.restore(state["batches"])
        self.last = state["last"]
        if self.stopper is not None:
            self.stopper.restore(state["stopper"])
        self._prune_candidates()
        log.info("%s: resuming from step %d of %d", self.stage.name, checkpoint.step, self.steps)

    def _prune_candidates(self) -> None:
        """Keep the best candidate checkpoint, and the one each kept checkpoint would resume with."""
        if self.stopper is None:
            return
        keep = {self.stopper.best_step} | {c.state["stopper"]["best_step"] for c in self.ctx.checkpoints.complete()}
        for path in (self.ctx.dir / "candidates").glob("step-*"):
            m = re.fullmatch(r"step-(\d+)", path.name)   # anything else is a save that a kill interrupted
            if m is None or int(m.group(1)) not in keep:
                shutil.rmtree(path, ignore_errors=True)

"""TRL's side of benchmarks/trl_side_by_side.py: GRPO with TRL's GRPOTrainer on a given checkpoint and prompt file,
in this process, each step's time and its phases written as metrics.jsonl records shaped like an ``rl`` stage's.

TRL on CPU generates with Hugging Face ``generate`` on the policy itself (``use_vllm=False``), so there is no weight
sync. The phases are timed by wrapping GRPOTrainer's own methods; a step is on_step_begin → on_step_end of a
TrainerCallback:

  generate_s   ``_generate``: tokenise the prompts, ``model.generate``, decode the completions
  reward_s     ``_calculate_rewards``: the reward function (rewards.math.MathReward, in this process)
  logprob_s    ``_get_per_token_logps_and_entropies`` outside the loss (old or reference logprobs; none here)
  train_s      ``training_step`` less its ``_prepare_inputs`` (forward + backward), then clipping and the
               optimizer step up to on_optimizer_step
  overhead_s   the rest of the step (advantages, padding, TRL's metric bookkeeping)
  between_s    on_step_end → the next on_step_begin: TRL's per-step logging, outside step_s

    python benchmarks/trl_grpo.py --model DIR --prompts FILE.jsonl --out DIR [--steps 20]

Needs the bench extra (pyproject.toml): ``pip install -e '.[bench]'`` or ``make bench-setup``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

PHASES = ("generate", "reward", "logprob", "train")


def build_trainer(args, rows: list[dict]):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from orchestrator.data.chat import encode_prompt
    from rewards.math import MathReward

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                           add_generation_prompt=True) for r in rows]
    # TRL tokenises a plain-text prompt with the tokenizer's defaults: the ids must be the project's own.
    for row, text in list(zip(rows, texts))[:16]:
        if tokenizer(text)["input_ids"] != encode_prompt(tokenizer, row):
            raise SystemExit(f"TRL would tokenise {row['prompt']!r} differently from the rl stage.")
    dataset = Dataset.from_list([{"prompt": t, "answer": r["answer"]} for r, t in zip(rows, texts)])

    math = MathReward()

    def math_reward(prompts, completions, answer, **_) -> list[float]:
        return [math(c, {"answer": a}).score for c, a in zip(completions, answer)]

    config = GRPOConfig(
        output_dir=str(args.out / "trainer"), use_cpu=True, bf16=False, gradient_checkpointing=False,
        use_vllm=False, per_device_train_batch_size=args.per_step * args.samples, gradient_accumulation_steps=1,
        num_generations=args.samples, max_completion_length=args.max_tokens, temperature=1.0, top_p=1.0,
        beta=0.0, epsilon=0.2, epsilon_high=0.28, loss_type="dapo", learning_rate=1e-4,
        lr_scheduler_type="constant", adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0,
        max_steps=args.steps, logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none",
        disable_tqdm=True, seed=args.seed, dataloader_num_workers=0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    clock = StepClock(args.out / "metrics.jsonl")
    trainer = timed_trainer(GRPOTrainer, clock)(
        model=model, reward_funcs=math_reward, args=config, train_dataset=dataset, processing_class=tokenizer,
        callbacks=[clock.callback(TrainerCallback)])
    return trainer, clock


class StepClock:
    """Per-step phase seconds, filled by the wrapped trainer methods and the callback, one record per step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = defaultdict(float)
        self.begin = self.end = self.train_end = self.between = 0.0
        self.tokens = 0
        self.in_scoring = False
        self.records: list[dict] = []

    @contextmanager
    def timing(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0

    def callback(self, base):
        clock = self

        class Clock(base):
            def on_step_begin(self, args, state, control, **kwargs):
                now = time.perf_counter()
                clock.between = now - clock.end if clock.end else 0.0
                clock.begin, clock.seconds, clock.tokens = now, defaultdict(float), 0

            def on_optimizer_step(self, args, state, control, **kwargs):
                clock.seconds["train"] += time.perf_counter() - clock.train_end

            def on_step_end(self, args, state, control, **kwargs):
                clock.end = time.perf_counter()
                clock.record(state.global_step, clock.end - clock.begin)

        return Clock()

    def record(self, step: int, wall: float) -> None:
        if self.records:
            self.records[-1]["between_s"] = round(self.between, 3)
        row = {"step": step, "step_s": round(wall, 3)}
        row.update({f"{p}_s": round(self.seconds[p], 3) for p in PHASES})
        row.update(sync_s=0.0, overhead_s=round(wall - sum(self.seconds[p] for p in PHASES), 3),
                   generated_tokens=self.tokens)
        self.records.append(row)


def timed_trainer(base, clock: StepClock):
    """``base`` (GRPOTrainer) with its generation, reward, logprob and training calls timed into ``clock``."""

    class TimedGRPOTrainer(base):
        def _generate(self, prompts):
            t0 = time.perf_counter()
            out = super()._generate(prompts)
            clock.seconds["generate"] += time.perf_counter() - t0
            clock.tokens += sum(len(ids) for ids in out[1])  # (prompt_ids, completion_ids, ...)
            return out

        def _calculate_rewards(self, *args, **kwargs):
            with clock.timing("reward"):
                return super()._calculate_rewards(*args, **kwargs)

        def _generate_and_score_completions(self, inputs):
            clock.in_scoring = True
            try:
                return super()._generate_and_score_completions(inputs)
            finally:
                clock.in_scoring = False

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            if not clock.in_scoring:  # inside the loss: part of train_s
                return super()._get_per_token_logps_and_entropies(*args, **kwargs)
            with clock.timing("logprob"):
                return super()._get_per_token_logps_and_entropies(*args, **kwargs)

        def _prepare_inputs(self, generation_batch):
            with clock.timing("prepare"):
                return super()._prepare_inputs(generation_batch)

        def training_step(self, model, inputs, num_items_in_batch):
            t0, before = time.perf_counter(), clock.seconds["prepare"]
            out = super().training_step(model, inputs, num_items_in_batch)
            clock.train_end = time.perf_counter()
            clock.seconds["train"] += clock.train_end - t0 - (clock.seconds["prepare"] - before)
            return out

    return TimedGRPOTrainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a Hugging Face checkpoint directory (model and tokenizer)")
    p.add_argument("--prompts", type=Path, required=True, help="JSONL rows with prompt and answer")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--prompts-per-step", dest="per_step", type=int, default=8)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in args.prompts.read_text().splitlines() if line.strip()]
    trainer, clock = build_trainer(args, rows)
    t0 = time.perf_counter()
    trainer.train()
    with (args.out / "metrics.jsonl").open("w") as f:
        for row in clock.records:
            f.write(json.dumps(row) + "\n")
    print(json.dumps({"train_s": round(time.perf_counter() - t0, 2), "steps": len(clock.records)}))


if __name__ == "__main__":
    main()

"""FP8 against fp32 on a trained tiny DeepSeek-V3: teacher-forced loss, greedy pass@1, and a short SFT run.

Needs a finished run of the tiny pipeline (its cold-start checkpoint, its random-init model and its data):

    python -m orchestrator run pipelines/tiny_sft.yaml --run-dir runs/fp8_base
    PYTHONPATH=. python benchmarks/fp8_numerics.py --run-dir runs/fp8_base

1. The trained checkpoint loaded twice, `fp8=False` and `fp8=True`: mean teacher-forced loss on the assistant
   tokens of held-out rows (their reference worked solutions, regenerated from the synthetic split), and greedy
   pass@1 on the same rows (our cached generation, graded by the `math` reward).
2. SFT from the pipeline's random-init model with the pipeline's train settings for `--sft-steps` steps, fp32 and
   FP8, same seed and batches, through PolicyTrainer (DeepSpeed, one rank): both loss curves, plotted to
   benchmarks/figures/fp8_sft_loss.png.
Without CUDA the FP8 GEMMs run the torch reference: the numerics of the recipe, not its speed.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from actors.model import DeepseekV3ForCausalLM
from actors.trainer import PolicyTrainer, _free_port
from orchestrator.data.chat import encode_prompt, encode_sft, pad_batch
from orchestrator.data.loading import read_rows
from orchestrator.data.synthetic import draw_split, generate_problem
from orchestrator.stages.sft import EpochBatches, _shard
from orchestrator.yaml_errors import load_pipeline
from rewards.registry import get_reward

FIGURES = Path(__file__).resolve().parent / "figures"


@torch.no_grad()
def teacher_forced_loss(model, examples, pad_id: int, batch: int = 50) -> float:
    """Token-weighted mean next-token cross-entropy on assistant tokens."""
    total, tokens = 0.0, 0
    for i in range(0, len(examples), batch):
        ids, mask = (torch.tensor(x) for x in pad_batch(examples[i:i + batch], pad_id))
        labels = ids.masked_fill(mask == 0, -100)
        count = int((labels[:, 1:] != -100).sum())
        out = model(ids, labels=labels)  # right padding under a causal mask: no real token sees it
        total += float(out.lm_loss) * count
        tokens += count
    return total / tokens


def greedy_pass_at_1(model, tokenizer, rows: list[dict], max_tokens: int, batch: int = 50) -> float:
    grade = get_reward("math")
    order = sorted(range(len(rows)), key=lambda i: len(encode_prompt(tokenizer, rows[i])))
    correct = 0
    for i in range(0, len(order), batch):
        chunk = [rows[j] for j in order[i:i + batch]]
        outs = model.generate([encode_prompt(tokenizer, r) for r in chunk], max_tokens, tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(outs, skip_special_tokens=True)
        correct += sum(grade(text, row).score >= 1.0 for text, row in zip(texts, chunk))
    return correct / len(rows)


def with_reference_responses(rows: list[dict], synthetic) -> list[dict]:
    """Held-out synthetic rows keep no worked solution on disk; the same draws as their split give it back."""
    found = {}

    def draw(rng):
        p = generate_problem(rng, synthetic.digits, tuple(synthetic.ops))
        found[p.prompt] = p.response()
        return {"prompt": p.prompt, "response": found[p.prompt]}

    draw_split(synthetic.split, synthetic.size, synthetic.seed, draw, "reference responses")
    return [{**row, "response": found[row["prompt"]]} for row in rows]


def compare_checkpoint(checkpoint: Path, rows: list[dict], synthetic, max_tokens: int) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    examples = [encode_sft(tokenizer, r, 10_000) for r in with_reference_responses(rows, synthetic)]
    out = {}
    for mode in ("fp32", "fp8"):
        model = DeepseekV3ForCausalLM.from_pretrained(checkpoint, fp8=mode == "fp8").eval()
        t0 = time.perf_counter()
        out[mode] = {"loss": teacher_forced_loss(model, examples, tokenizer.pad_token_id),
                     "pass@1": greedy_pass_at_1(model, tokenizer, rows, max_tokens),
                     "seconds": round(time.perf_counter() - t0, 1)}
        print(mode, out[mode], flush=True)
    out["loss_rel_diff"] = abs(out["fp8"]["loss"] - out["fp32"]["loss"]) / out["fp32"]["loss"]
    out["pass@1_diff_points"] = 100 * (out["fp8"]["pass@1"] - out["fp32"]["pass@1"])
    out["rows"], out["loss_rows"] = len(rows), len(examples)
    return out


def short_sft(init_model: Path, train, sft_rows: list[dict], steps: int, threads: int) -> dict:
    """``train``: the stage's SFTTrainSpec."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(init_model))
    examples = [e for e in (encode_sft(tokenizer, r, train.max_seq_len) for r in sft_rows) if e is not None]
    grad_accum = train.batch_size // train.micro_batch_size
    curves = {}
    for mode in ("fp32", "fp8"):
        trainer = PolicyTrainer(rank=0, world_size=1, threads=threads)
        trainer.init_distributed("127.0.0.1", _free_port("127.0.0.1"))  # a no-op after the first mode
        trainer.setup(train.settings(str(init_model), total_steps=steps, grad_accum=grad_accum, fp8=mode == "fp8"))
        t0, losses = time.perf_counter(), []
        batches = EpochBatches(len(examples), train.batch_size, train.seed)
        for _ in range(steps):
            batch = [examples[i] for i in batches.next()]
            losses.append(trainer.sft_step(_shard(batch, 1, tokenizer.pad_token_id)[0]).loss)
            if len(losses) % 25 == 0:
                print(f"{mode} step {len(losses)} loss {losses[-1]:.4f}", flush=True)
        curves[mode] = {"losses": losses, "seconds": round(time.perf_counter() - t0, 1)}
    return curves


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for mode, style in (("fp32", "-"), ("fp8", "--")):
        losses = curves[mode]["losses"]
        ax.plot(range(1, len(losses) + 1), losses, style, label=f"{mode} (final {losses[-1]:.4f})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("SFT loss (assistant tokens)")
    ax.set_yscale("log")
    ax.set_title("tiny DeepSeek-V3 SFT, fp32 vs FP8 (CPU, emulated)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/fp8_base"))
    parser.add_argument("--stage", default="cold_start")
    parser.add_argument("--eval-rows", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--sft-steps", type=int, default=200, help="0 skips the SFT comparison")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=FIGURES / "fp8_numerics.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    spec = load_pipeline(args.run_dir / "pipeline.yaml")
    stage = next(s for s in spec.stages if s.name == args.stage)
    checkpoint = args.run_dir / stage.name / "checkpoint"
    eval_name = stage.eval.data[0].name
    eval_rows = read_rows(args.run_dir / "datasets" / f"{eval_name}.jsonl")[: args.eval_rows]
    result = {"checkpoint": compare_checkpoint(checkpoint, eval_rows, spec.datasets[eval_name].synthetic,
                                               args.max_tokens)}
    if args.sft_steps:
        train = stage.train
        sft_rows = [r for ref in stage.data for r in read_rows(args.run_dir / "datasets" / f"{ref.name}.jsonl")]
        curves = short_sft(args.run_dir / "models" / stage.model.name, train, sft_rows, args.sft_steps,
                           args.threads)
        plot(curves, FIGURES / "fp8_sft_loss.png")
        final = {m: sum(c["losses"][-10:]) / len(c["losses"][-10:]) for m, c in curves.items()}  # less noise
        result["sft"] = {**curves, "final_mean_last10": final,
                         "final_rel_diff": abs(final["fp8"] - final["fp32"]) / final["fp32"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result["checkpoint"].items()}
    if "sft" in result:
        summary["sft_final_mean_last10"] = result["sft"]["final_mean_last10"]
        summary["sft_final_rel_diff"] = result["sft"]["final_rel_diff"]
        summary["sft_seconds"] = {m: result["sft"][m]["seconds"] for m in ("fp32", "fp8")}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

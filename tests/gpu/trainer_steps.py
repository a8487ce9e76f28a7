"""Run by tests/gpu/test_trainer_cuda.py in a child process (NCCL and DeepSpeed set process-wide state): one
PolicyTrainer rank on CUDA takes SFT and GRPO steps on a tiny model and prints what it saw as one JSON line.

    python tests/gpu/trainer_steps.py ARCH ZERO_STAGE OUT_DIR [DEVICE]   # ARCH: qwen2 | v3; DEVICE: cuda (default)

DEVICE cpu runs the same steps on gloo, in fp32: a check of this script, not of the GPU path.

Builds its tiny checkpoint itself (transformers' Qwen2 or our DeepSeek-V3, random weights, no tokenizer), so it
needs torch, transformers, safetensors and deepspeed only: no Ray, no vLLM, no pydantic.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors.trainer import PolicyTrainer  # noqa: E402
from actors.types import (LossSettings, OptimSettings, RLBatch, RLMicroBatch, SFTBatch,  # noqa: E402
                          TrainerSettings)

VOCAB = 256


def checkpoint(arch: str, out: Path) -> str:
    if arch == "v3":
        from actors.model import DeepseekV3Config, DeepseekV3ForCausalLM

        torch.manual_seed(0)
        DeepseekV3ForCausalLM(DeepseekV3Config.tiny(hidden_size=64, vocab_size=VOCAB)).save_pretrained(out)
    else:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(0)
        Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=2, num_key_value_heads=1)).save_pretrained(out)
    return str(out)


def settings(path: str, zero: int, loss: LossSettings | None) -> TrainerSettings:
    optim = OptimSettings(lr=3e-3, weight_decay=0.0, betas=(0.9, 0.95), warmup_steps=0, schedule="constant",
                          min_lr_ratio=1.0, decay_steps=None, grad_clip=1.0)
    return TrainerSettings(model_path=path, fp8=False, dtype="auto", zero_stage=zero, seed=0, micro_batch_size=2,
                           grad_accum=1 if loss else 2, total_steps=8, router_bias_update_speed=1e-3,
                           gradient_checkpointing=True, optim=optim, loss=loss)


def main() -> None:
    arch, zero, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    device = sys.argv[4] if len(sys.argv) > 4 else "cuda"
    path = checkpoint(arch, out / f"{arch}-model")
    trainer = PolicyTrainer(0, 1, threads=2 if device == "cpu" else None, device=device)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    trainer.init_distributed("127.0.0.1", port)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (4, 32), generator=g)  # CPU tensors, as the driver sends them
    mask = torch.ones(4, 32, dtype=torch.bool)
    mask[:, :8] = False
    report: dict = {"arch": arch, "zero_stage": zero}

    trainer.setup(settings(path, zero, None))
    report["engine_device"] = str(trainer.engine_device)
    report["param_dtypes"] = sorted({str(p.dtype) for p in trainer.engine.module.parameters()
                                     if len(getattr(p, "ds_shape", p.shape)) > 1})  # ZeRO-3: partitions are flat
    report["sft_losses"] = [trainer.sft_step(SFTBatch(ids, mask, int(mask[:, 1:].sum()))).loss for _ in range(6)]

    loss = LossSettings(eps_low=0.2, eps_high=0.28, agg="token_mean", token_sum_norm=None, kl_coef=0.1,
                        kl_estimator="k3", entropy_coef=0.0, tis_cap=None, temperature=1.0, ref_refresh_every=2)
    trainer.setup(settings(path, zero, loss))
    ref = trainer.reference
    ref_params = list((ref.module if hasattr(ref, "zero_optimization_stage") else ref).parameters())
    report["reference_devices"] = sorted({str(p.device) for p in ref_params})
    mbs = [RLMicroBatch(ids[i:i + 2], mask[i:i + 2, 1:], torch.tensor([1.0, -1.0])) for i in (0, 2)]
    batch = RLBatch(mbs, normaliser=float(mask[:, 1:].sum()))
    before = trainer.logprobs(batch)
    report["logprobs_device"] = str(before[0].device)
    steps = [trainer.rl_step(batch) for _ in range(3)]
    report["rl_kl"] = [m.extra["kl"] for m in steps]
    report["rl_grad_norms"] = [m.grad_norm for m in steps]
    after = trainer.logprobs(batch)
    good = [float((a - b)[0][mbs[0].loss_mask[0]].sum()) for a, b in zip(after[:1], before[:1])]
    report["good_logprob_moved"] = good[0]  # advantage +1: should rise
    streamed = [(n, t) for n, t in trainer._hf_stream()]
    whole = trainer._hf_state()
    report["stream_matches_state"] = ([n for n, _ in streamed] == list(whole) and
                                      all(torch.equal(t.cpu(), whole[n].cpu()) for n, t in streamed))
    report["stream_device"] = sorted({str(t.device) for _, t in streamed})
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()

"""PolicyTrainer: one DeepSpeed data-parallel rank in a Ray actor.

Ranks are wired through Ray rather than a launcher: the driver asks rank 0 for an address and a free port,
then every actor sets the usual torch.distributed environment and joins (gloo on CPU, nccl on GPU). ZeRO
stage, precision and optimizer come from the stage's ``train`` section; the trainer never sees the rest of
the pipeline.

Loss scaling: each rank receives its share of one optimizer step's batch and the number of trained tokens
in the whole step, so the loss is an exact token mean over the global batch however the tokens are spread
over ranks and micro-batches (DeepSpeed divides by the accumulation steps and averages over ranks; we
multiply those factors back).

Devices: batches arrive as CPU tensors and are moved to ``engine.device`` before each forward; metric reductions run
on that device too (NCCL reduces CUDA tensors only). Building at scale (zero.Init, the ZeRO-3 reference, the weights
streamed per module) is in actors/trainer_zero.py. On GPUs none of this has run yet: the development machines have
no GPU; tests/gpu holds the checks for one.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from pathlib import Path

import torch

from actors import rng
from actors.actor_log import send_output_to_stage_log
from actors.actor_metrics import records_busy_time
from actors.losses import entropy_from_logits, grpo_loss, token_logprobs
from actors.run_dir_probe import RunDirProbe
from actors.trainer_zero import (batch_to, build_model, build_reference, check_on, compute_dtype,
                                 enable_gradient_checkpointing, gathered, gathered_chunks, refresh_reference)
from actors.types import RLBatch, SFTBatch, StepMetrics, TrainerSettings

log = logging.getLogger(__name__)


def _free_port(host: str) -> int:
    """A port free on ``host``, the address the rendezvous will listen on (on another node, 127.0.0.1 says
    nothing about the node's own address)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def lr_lambda(schedule: str, warmup: int, total: int, min_ratio: float, decay_steps: int | None = None):
    """Multiplier of the peak learning rate at each step: linear warmup, then constant/cosine/linear decay that
    reaches ``min_ratio`` at step ``decay_steps`` (default ``total``) and holds it from there on."""
    total = decay_steps or total

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - (1 - min_ratio) * progress

    return fn


def load_causal_lm(path: str, dtype: torch.dtype, fp8: bool = False):
    """Our DeepSeek-V3 for V3 checkpoints, transformers' implementation for everything else. ``fp8``: the V3's
    eligible linears run DeepSeek-V3's block-wise FP8 recipe (actors/model/fp8.py)."""
    import json

    model_type = json.loads((Path(path) / "config.json").read_text()).get("model_type")
    if model_type == "deepseek_v3":
        from actors.model import DeepseekV3ForCausalLM

        return DeepseekV3ForCausalLM.from_pretrained(path, fp8=fp8).to(dtype)
    if fp8:
        raise ValueError(f"fp8: true needs our DeepSeek-V3; {path} holds a {model_type!r} model. Set fp8: false for it.")
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


class PolicyTrainer(RunDirProbe):
    def __init__(self, rank: int, world_size: int, threads: int | None = None, device: str = "cpu"):
        send_output_to_stage_log()
        self.rank, self.world_size, self.device = rank, world_size, device
        if threads:
            torch.set_num_threads(threads)
        self.engine = None
        self.step = 0
        self.nccl_sender = None  # this stage's NCCL weight-sync group, on rank 0 (actors/weight_sync_nccl.py)

    # ------------------------------------------------------------------ wiring
    def address(self) -> tuple[str, int]:
        """Rank 0's rendezvous address (its node IP and a free port)."""
        import ray

        host = ray.util.get_node_ip_address()
        return host, _free_port(host)

    def init_distributed(self, master_addr: str, master_port: int) -> None:
        import deepspeed

        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        deepspeed.init_distributed(dist_backend="gloo" if self.device == "cpu" else "nccl",
                                   auto_mpi_discovery=False, verbose=False)

    # ------------------------------------------------------------------ setup
    def setup(self, settings: TrainerSettings) -> dict:
        """Load the model and build the DeepSpeed engine for one stage.

        RL stages (``settings.loss`` set) have a varying number of micro-batches per step, so they mark the
        accumulation boundary themselves (``grad_accum`` 1); with ``loss.kl_coef > 0`` a frozen copy of the
        starting model, placed like the policy, is the reference (actors/trainer_zero.py)."""
        import deepspeed

        self._release()
        torch.manual_seed(settings.seed + self.rank)
        dtype = compute_dtype(settings.dtype, self.device)
        ds_config = self._ds_config(settings, dtype)
        # Master weights stay fp32; DeepSpeed's bf16 mode keeps the compute copy in bf16. ZeRO-3: built partitioned.
        model = build_model(settings.model_path, settings.fp8, ds_config, load_causal_lm)
        if settings.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model_path = settings.model_path
        optim = settings.optim
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
            optim.schedule, optim.warmup_steps, settings.total_steps, optim.min_lr_ratio, optim.decay_steps))
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=ds_config)
        self.engine_device = torch.device(self.engine.device)
        self.grad_accum = settings.grad_accum
        self.bias_speed = settings.router_bias_update_speed
        # Our DeepSeek-V3 computes its extra training terms (MTP, optional balance loss) from labels, and
        # balances its experts by moving router biases after every optimizer step.
        self.is_v3 = type(model).__name__ == "DeepseekV3ForCausalLM"
        self.loss, self.reference = settings.loss, None
        if self.loss is not None and self.loss.kl_coef > 0:
            self.reference = build_reference(self.engine, settings.model_path, settings.fp8, ds_config, dtype,
                                             load_causal_lm)
        n_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())  # ZeRO-3: not the partition
        return {"parameters": n_params, "zero_stage": settings.zero_stage, "world_size": self.world_size}

    def _ds_config(self, settings: TrainerSettings, dtype: torch.dtype) -> dict:
        mbs, accum = settings.micro_batch_size, settings.grad_accum
        return {
            "train_micro_batch_size_per_gpu": mbs,
            "gradient_accumulation_steps": accum,
            "train_batch_size": mbs * accum * self.world_size,
            "gradient_clipping": settings.optim.grad_clip or 0.0,
            "zero_optimization": {"stage": settings.zero_stage,
                                  "stage3_gather_16bit_weights_on_model_save": True},
            "bf16": {"enabled": dtype == torch.bfloat16},
            "zero_allow_untested_optimizer": True,  # plain torch AdamW: DeepSpeed's fused ones need CUDA
            "steps_per_print": 1 << 30,
            "wall_clock_breakdown": False,
        }

    def _release(self) -> None:
        """Drop an earlier stage's engine, reference model and sync group before a new setup (an actor taken over
        by the next stage, orchestrator/actor_pool.py): the new stage starts as in a new actor."""
        if self.engine is None:
            return
        import gc

        self.engine.destroy()
        self.engine = self.reference = self.nccl_sender = None
        self.step = 0
        gc.collect()

    # ------------------------------------------------------------------ steps
    @records_busy_time
    def sft_step(self, batch: SFTBatch) -> StepMetrics:
        """One optimizer step on this rank's share: next-token cross-entropy on assistant tokens only."""
        t0 = time.perf_counter()
        engine = self.engine
        engine.train()
        batch = batch_to(batch, self.engine_device)
        ids, mask = batch.input_ids, batch.loss_mask
        micro = max(1, math.ceil(ids.shape[0] / self.grad_accum))
        # DeepSpeed divides each micro-batch loss by grad_accum and averages gradients over ranks.
        scale = self.grad_accum * self.world_size / max(1, batch.global_tokens)
        loss_sum, tokens = 0.0, 0
        chunks = list(zip(ids.split(micro), mask.split(micro)))
        assert len(chunks) == self.grad_accum, f"{len(chunks)} micro-batches for grad_accum={self.grad_accum}"
        for mb_ids, mb_mask in chunks:
            # Right padding only follows real tokens, so a causal model needs no attention mask here; the
            # loss mask keeps padding out of the loss.
            labels = mb_ids.masked_fill(~mb_mask, -100) if self.is_v3 else None
            out = self._forward(engine, mb_ids, labels)
            logits = out.logits[:, :-1]
            targets, tmask = mb_ids[:, 1:], mb_mask[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                    targets.reshape(-1), reduction="none")
            token_sum = (nll * tmask.reshape(-1)).sum()
            # MTP and balance terms are means per micro-batch: DeepSpeed's 1/grad_accum averages them.
            extra = out.loss - out.lm_loss if self.is_v3 else 0.0
            engine.backward(token_sum * scale + extra)
            engine.step()
            loss_sum += token_sum.item()
            tokens += int(tmask.sum())
        self.step += 1
        extra_metrics = {}
        if self.is_v3:
            from actors.model import update_router_bias

            extra_metrics = update_router_bias(engine.module, self.bias_speed)
        return StepMetrics(step=self.step, loss=self._global_mean(loss_sum, batch.global_tokens),
                           grad_norm=float(engine.get_global_grad_norm() or 0.0),
                           lr=engine.get_lr()[0], tokens=tokens, seconds=time.perf_counter() - t0,
                           extra=extra_metrics)

    @records_busy_time
    def rl_step(self, batch: RLBatch) -> StepMetrics:
        """One GRPO optimizer step on this rank's share (``actors.losses.grpo_loss``).

        ``batch.normaliser`` is the loss denominator over all ranks, so micro-batch losses add up to the global
        aggregate; DeepSpeed then averages gradients over ranks, which ``world_size`` undoes. Metrics are token-
        weighted means over all ranks."""
        if self.loss is None:
            raise RuntimeError("PolicyTrainer.rl_step called on a trainer set up without loss settings (an SFT "
                               "stage's trainer).")
        t0 = time.perf_counter()
        engine, loss_settings = self.engine, self.loss
        temperature = loss_settings.temperature
        engine.train()
        sums: dict[str, float] = {}
        loss_sum, tokens, ref_seconds = 0.0, 0, 0.0
        last = len(batch.micro_batches) - 1
        for i, mb in enumerate(batch.micro_batches):
            engine.set_gradient_accumulation_boundary(i == last)
            mb = batch_to(mb, self.engine_device)
            logits = self._forward(engine, mb.input_ids).logits[:, :-1]
            logprobs = token_logprobs(logits, mb.input_ids[:, 1:], temperature)
            if loss_settings.entropy_coef > 0:
                entropy = entropy_from_logits(logits, temperature)
            else:  # logged only: no graph
                with torch.no_grad():
                    entropy = entropy_from_logits(logits.detach(), temperature)
            ref = None
            if self.reference is not None:
                t_ref = time.perf_counter()
                ref = self._logprobs_of(self.reference, mb.input_ids)
                ref_seconds += time.perf_counter() - t_ref
            loss, metrics = grpo_loss(loss_settings, logprobs, mb.old_logprobs, mb.advantages, mb.loss_mask,
                                      batch.normaliser, ref_logprobs=ref, rollout_logprobs=mb.rollout_logprobs,
                                      entropy=entropy)
            if mb.rollout_logprobs is not None:
                # Trainer vs engine on the same tokens: ~0 for old == rollout weights; drift means a sync bug
                # or numerics worth a TIS correction.
                diff = (logprobs.detach() - mb.rollout_logprobs).abs()
                metrics["rollout_logprob_diff"] = float(diff.masked_fill(~mb.loss_mask, 0).sum()) / max(
                    1, int(mb.loss_mask.sum()))
            engine.backward(loss * self.world_size)
            engine.step()
            weight = metrics.pop("tokens")
            tokens += int(weight)
            loss_sum += float(loss.detach())
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value * weight
        self.step += 1
        extra = self._global_token_means(sums, tokens)
        extra["ref_seconds"] = ref_seconds
        if self.is_v3:
            from actors.model import update_router_bias

            extra.update(update_router_bias(engine.module, self.bias_speed))
        every = loss_settings.ref_refresh_every
        if self.reference is not None and every and self.step % every == 0:
            # The KL's anchor moves to the policy just trained (router biases moved included); from the next step
            # on, KL is measured against it.
            refresh_reference(self.reference, engine.module, engine.zero_optimization_stage() == 3)
        return StepMetrics(step=self.step, loss=self._global_mean(loss_sum, 1), tokens=tokens,
                           grad_norm=float(engine.get_global_grad_norm() or 0.0), lr=engine.get_lr()[0],
                           seconds=time.perf_counter() - t0, extra=extra)

    @torch.no_grad()
    @records_busy_time
    def logprobs(self, batch: RLBatch) -> list[torch.Tensor]:
        """Target-aligned logprobs [B, L-1] of every micro-batch under the current weights (no update): the
        behaviour policy's logprobs when a rollout batch is trained over several optimizer steps."""
        self.engine.eval()
        # Back on the CPU: the driver that unshards these has no GPU.
        on = self.engine_device
        out = [self._logprobs_of(self.engine, mb.input_ids.to(on)).cpu() for mb in batch.micro_batches]
        self.engine.train()
        return out

    def _forward(self, model, input_ids: torch.Tensor, labels: torch.Tensor | None = None):
        """``model`` (the engine or the reference) on inputs that must already be on the engine's device."""
        check_on(self.engine_device, input_ids=input_ids, labels=labels)
        return model(input_ids=input_ids) if labels is None else model(input_ids=input_ids, labels=labels)

    @torch.no_grad()
    def _logprobs_of(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        logits = self._forward(model, input_ids).logits[:, :-1]
        return token_logprobs(logits, input_ids[:, 1:], self.loss.temperature)

    def _global_token_means(self, sums: dict[str, float], tokens: int) -> dict[str, float]:
        keys = sorted(sums)
        # On the engine's device: NCCL reduces CUDA tensors only (gloo: the CPU, as before).
        totals = torch.tensor([sums[k] for k in keys] + [float(tokens)], dtype=torch.float64,
                              device=self.engine_device)
        if self.world_size > 1:
            torch.distributed.all_reduce(totals)
        count = max(1.0, float(totals[-1]))
        return {k: float(v) / count for k, v in zip(keys, totals[:-1].tolist())} | {"tokens_global": float(totals[-1])}

    def _global_mean(self, local_sum: float, global_tokens: int) -> float:
        total = torch.tensor([local_sum], dtype=torch.float64, device=self.engine_device)
        if self.world_size > 1:
            torch.distributed.all_reduce(total)
        return float(total.item()) / max(1, global_tokens)

    # ------------------------------------------------------------------ checkpoints
    def save_hf(self, out_dir: str) -> str | None:
        """Write a Hugging Face checkpoint (safetensors + config + tokenizer) that vLLM loads. Every rank must
        call this (ZeRO-3 gathers shards); rank 0 writes."""
        from transformers import AutoTokenizer

        module = self.engine.module
        state = self._full_state_dict()
        if self.rank != 0:
            return None
        out = Path(out_dir)
        tmp = out.with_name(out.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        module.save_pretrained(str(tmp), state_dict={k: v.contiguous() for k, v in state.items()})
        AutoTokenizer.from_pretrained(self.model_path).save_pretrained(str(tmp))
        if out.exists():
            import shutil

            shutil.rmtree(out)
        tmp.rename(out)  # readers never see a half-written checkpoint
        return str(out)

    def weight_bucket_refs(self, bucket_mb: float = 64.0) -> list:
        """The current weights for in-memory sync: on rank 0, a list of Ray object refs, one per bucket of
        (Hugging Face checkpoint name, tensor) pairs of about ``bucket_mb`` MB; [] on other ranks. Every rank must
        call this (ZeRO-3 gathers shards). Contract: actors/weight_sync.py."""
        import ray

        from actors.weight_sync import buckets_of

        state = self._hf_state()
        if state is None:
            return []
        # A list of refs is returned as refs: the driver forwards them without pulling the tensors itself.
        return [ray.put(bucket) for bucket in buckets_of(state.items(), bucket_mb)]

    def init_nccl_sync(self, master_address: str, master_port: int, world_size: int, buffer_bytes: int):
        """Rank 0 opens the stage's NCCL weight-sync group with the rollout engines' workers and returns its
        ``WeightPlan``; other ranks only take part in the gather and return None. Every rank must call this.
        Contract: actors/weight_sync_nccl.py."""
        from actors.weight_sync_nccl import NcclSender

        plan = self.weight_plan()
        if plan is None:
            return None
        self.nccl_sender = NcclSender(plan, master_address, master_port, world_size, buffer_bytes)
        return plan

    def weight_plan(self):
        """What every sync of the current model carries (names, dtypes, shapes in order: a ``WeightPlan``) on rank 0,
        None elsewhere; read from ``_hf_stream``, so no rank gathers more than one module. A collective (ZeRO-3)."""
        from actors.weight_sync_nccl import WeightPlan

        plan = WeightPlan.of(self._hf_stream())
        return plan if self.rank == 0 else None

    def send_weights_nccl(self, version: int) -> dict | None:
        """Broadcast the current weights over the NCCL group (rank 0; other ranks join the gather and return None).
        Every rank must call this, while the engines receive. Contract: actors/weight_sync_nccl.py."""
        if self.rank == 0 and self.nccl_sender is None:
            raise RuntimeError("PolicyTrainer.send_weights_nccl called before init_nccl_sync: no NCCL group.")
        stream = self._hf_stream()
        if self.rank != 0:
            for _ in stream:  # this rank's part of each module's gather
                pass
            return None
        return self.nccl_sender.send(stream, version)

    def _hf_state(self) -> dict | None:
        """The weights under their Hugging Face names on rank 0, None elsewhere: what save_pretrained writes (names,
        and the FP8 recipe's export format), so vLLM receives what it would read from disk. A collective (ZeRO-3)."""
        state = self._full_state_dict()
        if self.rank != 0:
            return None
        if self.is_v3:
            from actors.model.checkpoint import export_state

            state, _ = export_state(self.engine.module, state)
        if getattr(self.engine.module.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)   # the embedding's tensor again; save_pretrained leaves it out too
        return state

    def _hf_stream(self):
        """``_hf_state``'s items (same names, order, values) as a stream on rank 0, gathered one module at a time
        (``trainer_zero.gathered_chunks``), on the engine's device. Every rank must exhaust it (ZeRO-3 gathers);
        the other ranks' stream yields nothing."""
        module, keep = self.engine.module, self.rank == 0
        zero3 = self.engine.zero_optimization_stage() == 3
        chunks = gathered_chunks(module, zero3, keep)
        if self.is_v3:
            from actors.model.checkpoint import export_stream

            yield from export_stream(module, chunks, lambda names: gathered(module, names, zero3, keep))
            return
        tied = getattr(module.config, "tie_word_embeddings", False)
        for chunk in chunks:
            yield from ((k, v) for k, v in chunk.items() if not (tied and k == "lm_head.weight"))

    def _full_state_dict(self) -> dict:
        """The whole model's state on rank 0 (ZeRO-3 gathers the shards: a collective every rank joins)."""
        if self.engine.zero_optimization_stage() == 3:
            return self.engine._zero3_consolidated_16bit_state_dict()
        return self.engine.module.state_dict()

    def save_state(self, out_dir: str) -> None:
        """What resuming needs on this rank: DeepSpeed's checkpoint (weights, MoE router biases, optimizer and
        scheduler state; each rank writes its own shards) and this rank's RNG state. A collective: every rank
        must call it. The stage's own progress is the driver's to keep (orchestrator/checkpoints.py)."""
        self.engine.save_checkpoint(out_dir, tag="state", client_state={"step": self.step})
        torch.save(rng.capture(), Path(out_dir) / f"rng-rank{self.rank}.pt")

    def load_state(self, in_dir: str) -> int:
        """Restore what ``save_state`` wrote, into an engine ``setup`` built for the same stage and world size;
        returns the trainer's step count. A collective: every rank must call it."""
        _, client_state = self.engine.load_checkpoint(in_dir, tag="state")
        if client_state is None:
            raise FileNotFoundError(f"No trainer state under {in_dir}: the checkpoint is incomplete.")
        rng_file = Path(in_dir) / f"rng-rank{self.rank}.pt"
        if not rng_file.exists():
            raise FileNotFoundError(f"{rng_file} is missing: the checkpoint was written by a different number of "
                                    "trainer ranks; resume with the same cluster.trainer.workers.")
        rng.restore(torch.load(rng_file, weights_only=False))
        self.step = client_state["step"]
        return self.step

    def parameter_checksum(self) -> float:
        """Sum of all (gathered) parameters: cheap evidence that ranks agree and that training moved weights."""
        import deepspeed

        params = list(self.engine.module.parameters())
        with deepspeed.zero.GatheredParameters(params, enabled=self.engine.zero_optimization_stage() == 3):
            return float(sum(p.detach().double().sum() for p in params))

"""RolloutWorker: a vLLM engine inside a Ray actor.

The engine runs in the actor's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): start-up is faster, and
``collective_rpc`` reaches the model worker directly, which is how new weights get in without a restart.
Prompts arrive as token ids rendered by the driver with the model's chat template, so the trainer later
scores exactly the tokens the engine conditioned on.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from actors import rng
from actors.actor_log import send_output_to_stage_log
from actors.actor_metrics import actor_metrics, records_busy_time
from actors.run_dir_probe import RunDirProbe
from actors.types import EngineSettings, Rollout, SamplingParams
from actors.weight_sync_nccl import ENGINE_ARGS as NCCL_ENGINE_ARGS

log = logging.getLogger(__name__)

# Architectures whose in-place reload was shown to reproduce the checkpoint exactly on vLLM CPU 0.32. MoE models
# are rebuilt instead: vLLM CPU 0.32's fused-MoE layers do not take in-place expert reloads correctly. So are
# models with tied embeddings: the reload skips `lm_head` (it is not in the checkpoint) and vLLM keeps the
# old head's repacked copy, so the served model would mix old and new weights.
_RELOADABLE = {"qwen2", "llama"}


def reloadable_in_place(config: dict) -> bool:
    return config.get("model_type") in _RELOADABLE and not config.get("tie_word_embeddings", False)


class RolloutWorker(RunDirProbe):
    """Generates completions with vLLM. Construct with the engine settings; ``load`` a checkpoint first."""

    def __init__(self, engine: EngineSettings, threads: int | None = None, device: str = "cpu"):
        send_output_to_stage_log()
        self.engine = engine
        self.device = device
        self.llm = None
        self.model_path: str | None = None
        self.model_type: str | None = None
        self.version = -1
        self.syncing_version: int | None = None  # set while an in-memory weight sync is open
        if device == "cpu":
            # Before vLLM is imported: engine in this process, threads under Ray's CPU accounting.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(engine.kv_cache_gib))
            if threads:
                import torch

                torch.set_num_threads(threads)

    def _build(self, path: str) -> None:
        from vllm import LLM

        e = self.engine
        args = dict(dtype=e.dtype, max_model_len=e.max_model_len, enforce_eager=e.enforce_eager,
                    gpu_memory_utilization=e.gpu_memory_utilization, tensor_parallel_size=e.tensor_parallel_size,
                    seed=e.seed,
                    # Lets update_weights reach the running model (actors/weight_sync.py).
                    worker_extension_cls="actors.weight_sync.VllmWeightReceiver",
                    # Sampled tokens' logprobs after temperature (and top-p/top-k) processing: the distribution
                    # that was actually sampled, which the trainer recomputes at the same temperature (GRPO's
                    # TIS, logprob drift).
                    logprobs_mode="processed_logprobs")
        if e.nccl_weight_transfer:
            args.update(NCCL_ENGINE_ARGS)
        if self.model_type == "deepseek_v3" and self.device == "cpu":
            # vLLM 0.32's CPU MLA backend rejects the small head dims of CPU-sized models; its plain attention path
            # serves the same weights. GPUs keep the MLA kernels.
            os.environ.setdefault("VLLM_MLA_DISABLE", "1")
            rope = json.loads((Path(path) / "config.json").read_text()).get("rope_parameters") or {}
            if rope.get("rope_type", "default") == "default":
                log.warning("%s: vLLM CPU 0.32 serves DeepSeek-V3 with plain RoPE with logprobs off by 1e-2 to "
                            "1e0 from the reference implementation (its YaRN path is exact); express plain RoPE as "
                            "YaRN with factor 1.0 for exact rollouts.", path)
        t0 = time.perf_counter()
        self.llm = LLM(model=path, tokenizer=path, **args)
        log.info("vLLM engine for %s ready in %.1f s", path, time.perf_counter() - t0)

    def load(self, path: str, version: int = 0) -> dict:
        """Serve the checkpoint at ``path``: in place if the engine already serves this architecture and in-place
        reloads are exact for it, otherwise with a fresh engine."""
        t0 = time.perf_counter()
        config = json.loads((Path(path) / "config.json").read_text())
        model_type = config.get("model_type")
        reuse = self.llm is not None and model_type == self.model_type and reloadable_in_place(config)
        if reuse:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": path})
            self.llm.reset_prefix_cache()
        else:
            self.close()
            self.model_type = model_type
            self._build(path)
        self.model_path, self.version = path, version
        return {"seconds": time.perf_counter() - t0, "reloaded_in_place": reuse, "version": version}

    @records_busy_time
    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Rollout]:
        """``sampling.n`` completions per prompt (token ids), ordered prompt by prompt."""
        if self.llm is None:
            raise RuntimeError("RolloutWorker.generate called before load(): no model is being served.")
        self._refuse_during_sync("generate")
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.inputs import TokensPrompt

        # vLLM 0.32's CPU runner fails ("CPU Generator does not use offset") when a request with its own seed
        # is caught mid chunked-prefill, so on CPU sampling draws from the engine's generator, seeded once by
        # `rollout.seed`: the same requests in the same order still give the same samples.
        seed = sampling.seed if self.device != "cpu" else None
        params = VllmSamplingParams(
            n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=sampling.max_tokens, seed=seed,
            logprobs=0 if sampling.logprobs else None, stop_token_ids=sampling.stop_token_ids or None,
        )
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        rollouts = []
        for i, out in enumerate(outputs):
            for c in out.outputs:
                logprobs = None
                if sampling.logprobs and c.logprobs is not None:
                    logprobs = [step[tok].logprob for step, tok in zip(c.logprobs, c.token_ids)]
                rollouts.append(Rollout(
                    prompt_index=i, prompt_ids=list(out.prompt_token_ids), response_ids=list(c.token_ids),
                    response_logprobs=logprobs, text=c.text,
                    finish_reason="length" if c.finish_reason == "length" else "stop",
                    policy_version=self.version,
                ))
        actor_metrics().generated(sum(len(r.response_ids) for r in rollouts))
        return rollouts

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float | None]]:
        """Teacher-forced log-probability of every token given its prefix (None for the first token)."""
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.inputs import TokensPrompt

        self._refuse_during_sync("prompt_logprobs")
        params = VllmSamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in sequences], params, use_tqdm=False)
        return [[None if d is None else d[t].logprob for d, t in zip(o.prompt_logprobs, s)]
                for o, s in zip(outputs, sequences)]

    def update_weights(self, bucket: list, version: int, last: bool) -> dict | None:
        """Load one bucket of (Hugging Face name, tensor) pairs into the running engine; the first bucket opens
        the sync and ``last`` closes it and adopts ``version``. Contract: actors/weight_sync.py."""
        if self.llm is None:
            raise RuntimeError("RolloutWorker.update_weights called before load(): no engine to update.")
        if self.syncing_version not in (None, version):
            raise RuntimeError(f"A weight sync to version {self.syncing_version} is still open; version {version} "
                               "cannot start until its last bucket has arrived.")
        if self.syncing_version is None:
            self._sync_started = time.perf_counter()
            self.llm.collective_rpc("weight_sync_begin")
            self.syncing_version, self._sync_buckets, self._sync_bytes = version, 0, 0
        self.llm.collective_rpc("weight_sync_load", args=(bucket,))
        self._sync_buckets += 1
        self._sync_bytes += sum(t.numel() * t.element_size() for _, t in bucket)
        if not last:
            return None
        self.llm.collective_rpc("weight_sync_finish")
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        self.version, self.syncing_version = version, None
        return {"version": version, "buckets": self._sync_buckets, "bytes": self._sync_bytes,
                "seconds": time.perf_counter() - self._sync_started}

    # ------------------------------------------------------------------ NCCL weight sync (actors/weight_sync_nccl.py)
    def engine_world_size(self) -> int:
        """This engine's GPU workers (tensor x pipeline parallel): its members in the NCCL weight-sync group."""
        return self.llm.get_world_size(include_dp=False)

    def init_nccl_sync(self, init_info: dict) -> None:
        """Join trainer rank 0's NCCL weight-sync group (vLLM's ``init_weight_transfer_engine``); returns once every
        member has joined. The engine must have been built with ``actors.weight_sync_nccl.ENGINE_ARGS``."""
        if self.llm is None:
            raise RuntimeError("RolloutWorker.init_nccl_sync called before load(): no engine to join the group.")
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def update_weights_nccl(self, update_info: dict, version: int) -> dict:
        """Receive a whole weight update over NCCL while trainer rank 0 sends it, finalise it and adopt
        ``version``. ``update_info``: the stage's ``WeightPlan.update_info()``."""
        self._refuse_during_sync("update_weights_nccl")
        t0 = time.perf_counter()
        self.syncing_version = version  # stays set if the transfer fails: the weights are half-loaded
        self.llm.start_weight_update()
        self.llm.update_weights({"update_info": update_info})
        self.llm.finish_weight_update(weight_version=str(version))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        self.version, self.syncing_version = version, None
        return {"version": version, "seconds": time.perf_counter() - t0}

    # ------------------------------------------------------------------ resuming
    def rng_state(self) -> dict:
        """This process's RNG state. On CPU, where vLLM runs in this process and requests carry no seed of their
        own (see ``generate``), sampling draws from it: a checkpoint keeps it so a resumed stage samples the same."""
        return rng.capture()

    def set_rng_state(self, state: dict) -> None:
        """Restore ``rng_state``; call it after ``load`` and any weight sync (building an engine draws from it)."""
        rng.restore(state)

    def sync_open(self) -> bool:
        """Whether a weight sync was begun and never finished (its sender died): the engine must be rebuilt."""
        return self.syncing_version is not None

    def _refuse_during_sync(self, what: str) -> None:
        if self.syncing_version is not None:
            raise RuntimeError(f"RolloutWorker.{what} called while a weight sync to version {self.syncing_version} "
                               "is open: the engine's weights are half-loaded. Send the last bucket first.")

    def join_stage(self, stage: str, log_file: str | None) -> None:
        """As every role, and the engine goes: the new stage's ``load`` builds one afresh, seeded by
        ``rollout.seed`` as in a new actor, so a stage samples the same whether its actors are new or taken over.
        What is saved is the process and vLLM's import, not the engine's build (1-2 s on CPU)."""
        super().join_stage(stage, log_file)
        self.close()
        self.model_path, self.model_type, self.version = None, None, -1

    def close(self) -> None:
        if self.llm is not None:
            del self.llm
            self.llm = None
            import gc

            gc.collect()

"""In-memory weight sync: trainer rank 0 -> every RolloutWorker's running vLLM engine, in buckets.

Contract (the driver runs it; nothing here starts threads or keeps process state):

1. Quiesce. The driver syncs only between generation rounds: no ``generate``/``prompt_logprobs`` call may be
   in flight or issued until step 4 has returned on every worker. While a sync is open the engine's layers are
   half-built (vLLM 0.32's layerwise reload parks them on the meta device), so ``RolloutWorker`` refuses to generate.
2. Pull. Every trainer rank calls ``PolicyTrainer.weight_bucket_refs(bucket_mb)`` (under ZeRO-3 all ranks take
   part in the gather). Rank 0 returns an ordered list of Ray object refs, one ``ray.put`` per bucket; a bucket
   is a list of ``(Hugging Face checkpoint name, CPU tensor)`` pairs of about ``bucket_mb`` MB, in state-dict
   order, i.e. the same tensors under the same names that ``save_hf`` writes. HF names let vLLM's own
   ``load_weights`` do the fusing and renaming (see actors/model/names.py for where each tensor lands).
3. Push. For each bucket, in order, the driver calls ``RolloutWorker.update_weights(ref, version, last)`` on
   every worker; Ray resolves the ref in the worker, so a bucket crosses the object store once per node, not
   once per tensor. The first bucket opens the sync, each bucket is loaded into the engine as it arrives, and
   the ``last=True`` bucket closes it.
4. Finalise. On the last bucket the receiver runs vLLM's post-load processing (repacking, attention/MLA
   processing, which recomputes absorbed matrices from a new ``kv_b_proj`` when the MLA backend is on), re-arms
   the CPU fused-MoE kernels (see ``_refresh_moe_kernels``), clears the prefix cache, and only then does the
   worker adopt ``version``. Every Rollout it generates afterwards carries that version.

Why one open sync over several RPCs rather than one ``reload_weights`` per bucket: vLLM 0.32's layerwise reload
processes a layer only once *all* of its weights have arrived, and at the end of a reload it puts back the old
tensors of layers that received nothing and processes partly loaded layers with uninitialised remainders. So a
layer split over two per-bucket reloads would be served half garbage. Opening the reload once, feeding every
bucket through ``model.load_weights`` and finalising once lets layers complete across bucket boundaries, while
each layer is processed (and its buffered tensors freed) as soon as it is complete.

Tied input/output embeddings (Qwen2.5 and Qwen3 up to 4B, the models R1 reproductions start from): the checkpoint
has no ``lm_head``, so the layerwise reload loads ``embed_tokens`` (into the storage the head shares) and treats the
head as a layer that received nothing. The head then holds the new values, but vLLM CPU 0.32 computes logits with a
GEMM it prepacked from the old weight at load time; step 4 re-ties the head and re-runs its post-load step, which
repacks from the new weight (``_refresh_tied_lm_head``). Not supported in place: MoE models whose
``moe_intermediate_size`` vLLM pads (``in_memory_sync_problem``); ``update_weights`` raises
``InPlaceSyncUnsupported`` before touching the engine, and the caller falls back to ``save_hf`` + ``load(path)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

import torch

Bucket = list[tuple[str, torch.Tensor]]


class InPlaceSyncUnsupported(RuntimeError):
    """The served model cannot take an in-memory weight update exactly; load a saved checkpoint instead."""


def in_memory_sync_problem(config: dict) -> str | None:
    """Why vLLM cannot take this model's weights in place exactly (a sentence), or None when it can.

    ``config`` is the model's config.json as a dict."""
    width = config.get("moe_intermediate_size")
    if config.get("n_routed_experts") and width and width % 32:
        return (f"this MoE model: moe_intermediate_size={width} is not a multiple of 32, so vLLM CPU pads its "
                "experts and padded experts do not reload exactly.")
    return None


# ---------------------------------------------------------------------------------------------- trainer side
def bucket_bytes(bucket_mb: float) -> int:
    """A bucket size in MB (a stage's ``sync_bucket_mb``) in bytes; both sync paths size their buckets with it."""
    return max(1, int(bucket_mb * 2**20))


def buckets_of(named: Iterable[tuple[str, torch.Tensor]], bucket_mb: float) -> Iterator[Bucket]:
    """Group (name, tensor) pairs, in order, into buckets of at most ``bucket_mb`` MB (a larger tensor goes alone).

    Tensors are detached, contiguous CPU copies so a bucket can be serialised without pinning trainer state."""
    limit = bucket_bytes(bucket_mb)
    bucket, size = [], 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > limit:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor.detach().to("cpu").contiguous().clone()))
        size += nbytes
    if bucket:
        yield bucket


# ---------------------------------------------------------------------------------------------- driver side
def sync_weights(trainers, rollout, version: int, bucket_mb: float = 64.0) -> dict:
    """Push the trainers' current weights into every rollout worker's engine and tag them ``version``.

    ``trainers`` and ``rollout`` are ``orchestrator.cluster.ActorGroup``s (``actors``, and ``gather`` to wait on
    calls, naming the actor that died if one does). Blocks until every worker has finalised, so a generate issued
    afterwards sees only the new weights. Raises ``InPlaceSyncUnsupported`` (from the workers) for models that need
    ``save_hf`` + ``load(path)`` instead."""
    t0 = time.perf_counter()
    refs = trainers.call("weight_bucket_refs", bucket_mb)[0]
    if not refs:
        raise ValueError("Trainer rank 0 returned no weight buckets; is its engine set up?")
    pulled = time.perf_counter()
    pending, ranks = [], []
    for i, ref in enumerate(refs):
        last = i == len(refs) - 1
        # Ray runs one caller's calls on an actor in submission order, so buckets arrive in order.
        pending += [w.update_weights.remote(ref, version, last) for w in rollout.actors]
        ranks += list(range(len(rollout.actors)))
    workers = [r for r in rollout.gather(pending, ranks) if r is not None]
    # Every engine receives the same weights: the bytes of one copy, as the NCCL path reports them.
    return {"seconds": time.perf_counter() - t0, "pull_seconds": pulled - t0, "buckets": len(refs),
            "bytes": workers[0]["bytes"], "version": version, "workers": workers}


# ---------------------------------------------------------------------------------------------- vLLM side
class VllmWeightReceiver:
    """vLLM worker extension (``worker_extension_cls="actors.weight_sync.VllmWeightReceiver"``).

    Methods run inside vLLM's worker via ``llm.collective_rpc``; ``self`` is that worker. Open, feed, close:
    see the module docstring for why the reload spans several calls."""

    def weight_sync_begin(self) -> None:
        from vllm.model_executor.model_loader.reload.layerwise import initialize_layerwise_reload

        problem = in_memory_sync_problem(self.model_runner.vllm_config.model_config.hf_config.to_dict())
        if problem:
            raise InPlaceSyncUnsupported(f"In-memory weight sync refuses {problem} Save the weights with save_hf "
                                         "and call RolloutWorker.load(path) instead.")
        _quiet_rotary_warning()
        initialize_layerwise_reload(self.model_runner.get_model())

    def weight_sync_load(self, bucket: Bucket) -> int:
        model = self.model_runner.get_model()
        return len(model.load_weights(iter(bucket)) or ())

    def weight_sync_finish(self) -> None:
        from vllm.model_executor.model_loader.reload.layerwise import finalize_layerwise_reload

        runner = self.model_runner
        model = runner.get_model()
        finalize_layerwise_reload(model, runner.vllm_config.model_config)
        _refresh_moe_kernels(model)
        _refresh_tied_lm_head(model, runner.vllm_config.model_config.hf_config)
        # The same caches vLLM 0.32's own reload_weights invalidates.
        runner.reset_lora_state()
        runner.reset_encoder_cache()
        runner.reset_mm_cache()


class _RotaryFilter(logging.Filter):
    """Rotary embeddings have cache buffers but no checkpoint weights, so vLLM 0.32's layerwise reload warns
    "<X>RotaryEmbedding: Failed to load weights" on every sync and puts the (unchanged) caches back; a tied
    ``ParallelLMHead`` likewise. Expected here; any other layer's warning still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # A tied head has no weights of its own in the checkpoint either (``_refresh_tied_lm_head``).
        return not any(f"{layer}: Failed to load weights" in message
                       for layer in ("RotaryEmbedding", "ParallelLMHead"))


def _quiet_rotary_warning() -> None:
    logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    if not any(isinstance(f, _RotaryFilter) for f in logger.filters):
        logger.addFilter(_RotaryFilter())


def _refresh_moe_kernels(model: torch.nn.Module) -> int:
    """Re-run the fused-MoE kernels' own post-load step on every MoE layer.

    vLLM 0.32's ``UnquantizedFusedMoEMethod.process_weights_after_loading`` calls
    ``moe_kernel.fused_experts.process_weights_after_loading`` only on the first load: on a reload it copies new
    w13/w2 into the old storage but the CPU kernel keeps the grouped-GEMM layout it prepacked from the old
    experts. Running that step again repacks from the new weights (exact when ``moe_intermediate_size`` is a
    multiple of 32, i.e. vLLM did not pad the experts)."""
    count = 0
    for module in model.modules():
        kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
        if kernel is not None:
            kernel.fused_experts.process_weights_after_loading(module)
            count += 1
    return count


def _refresh_tied_lm_head(model: torch.nn.Module, hf_config) -> bool:
    """Re-tie a tied output head to the reloaded input embedding and redo its post-load step.

    After the reload the head's weight shares the embedding's storage (already updated in place), but on CPU the
    head's ``UnquantizedEmbeddingMethod.process_weights_after_loading`` prepacked a GEMM from the old values at
    load time and keeps using it; running that step again repacks from the new weight. On GPU the step does
    nothing and the re-tie is a no-op. Returns whether there was a tied head to refresh."""
    if not getattr(hf_config, "tie_word_embeddings", False):
        return False
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or embed is None or not hasattr(head, "quant_method"):
        return False
    head.weight = embed.weight
    head.quant_method.process_weights_after_loading(head)
    return True

"""Our DeepSeek-V3 on its own: absorbed cache vs training path, padding, dispatch, routing, config and names."""

import pytest
import torch

from actors.model import DeepseekV3Config, DeepseekV3ForCausalLM
from actors.model import names
from actors.model.balancing import routers
from actors.model.mla import LatentCache, MultiHeadLatentAttention, attention_mask_for
from actors.model.layers import LinearFactory, SwiGLU
from actors.model.moe import dispatch_sorted
from actors.model.router import select_experts


def _model(seed: int = 0, **overrides) -> DeepseekV3ForCausalLM:
    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(DeepseekV3Config.tiny(**overrides)).eval()
    for router in routers(model):
        router.e_score_correction_bias.normal_(0.0, 0.15)
    return model


@torch.no_grad()
def test_absorbed_latent_cache_matches_training_attention():
    cfg = DeepseekV3Config.tiny()
    torch.manual_seed(0)
    attn = MultiHeadLatentAttention(cfg, LinearFactory(0.1))
    rope = _model().model.rotary_emb
    x = torch.randn(2, 9, cfg.hidden_size)
    cos, sin = rope(torch.arange(9).expand(2, 9))
    full = attn(x, cos, sin, None)
    cache = LatentCache.empty(2, 9, cfg, x)
    valid = torch.ones(2, 9, dtype=torch.bool)
    chunks = [(0, 5), (5, 6), (6, 7), (7, 9)]  # a prefill chunk, single tokens, a two-token chunk
    pieces = [attn(x[:, a:b], cos[:, a:b], sin[:, a:b], attention_mask_for(torch.arange(a, b), valid[:, :b]), cache)
              for a, b in chunks]
    assert (torch.cat(pieces, dim=1) - full).abs().max() < 1e-5
    # The cache holds only the latent and the shared rope key, not per-head keys and values.
    assert cache.latent.shape == (2, 9, cfg.kv_lora_rank) and cache.rope_key.shape == (2, 9, cfg.qk_rope_head_dim)


@torch.no_grad()
def test_greedy_generation_logits_match_a_full_forward():
    model = _model()
    prompts = [[5, 9, 17, 3], [40, 2], [7, 7, 8, 100, 101, 3, 9]]  # different lengths: left-padded internally
    tokens, step_logits = model.generate(prompts, max_new_tokens=6, return_logits=True)
    for prompt, new, logits in zip(prompts, tokens, step_logits):
        assert len(new) == 6
        full = model(torch.tensor([prompt + new[:-1]])).logits[0, len(prompt) - 1:]
        assert (full - logits).abs().max() < 1e-4
        assert new == full.argmax(-1).tolist()


@torch.no_grad()
def test_generation_stops_at_eos():
    model = _model()
    first = model.generate([[5, 9, 17]], max_new_tokens=4)[0]
    eos = first[1]
    assert model.generate([[5, 9, 17]], max_new_tokens=4, eos_token_id=eos)[0] == first[:first.index(eos) + 1]


@torch.no_grad()
def test_right_padded_batch_matches_unpadded_sequences():
    model = _model()
    seqs = [list(range(3, 15)), [50, 60, 70, 80, 90], [11]]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    out = model(ids, attention_mask=mask, labels=ids)
    for b, s in enumerate(seqs):
        alone = model(torch.tensor([s])).logits[0]
        assert (out.logits[b, :len(s)] - alone).abs().max() < 1e-5
    # Padded positions are neither predicted nor counted as expert load.
    assert int(out.expert_load[0].sum()) == sum(map(len, seqs)) * model.config.num_experts_per_tok
    labels = ids.masked_fill(mask == 0, -100)
    assert torch.allclose(out.loss, model(ids, attention_mask=mask, labels=labels).loss)


def test_sorted_dispatch_equals_per_token_reference():
    torch.manual_seed(0)
    experts = torch.nn.ModuleList(SwiGLU(8, 6, LinearFactory(0.3)) for _ in range(5))
    x, indices = torch.randn(11, 8), torch.randint(0, 5, (11, 3))
    weights = torch.rand(11, 3)
    expected = torch.stack([sum(weights[t, k] * experts[int(indices[t, k])](x[t]) for k in range(3))
                            for t in range(11)])
    assert (dispatch_sorted(x, indices, weights, experts) - expected).abs().max() < 1e-6


def test_group_limited_selection_excludes_weak_groups():
    # 8 experts in 4 groups of 2. Group scores (sum of top-2): g0 = 1.0, g1 = 1.1, g2 = 0.95, g3 = 0.2.
    # Plain top-3 would take experts 0 (0.9), 2 (0.6) and 4 (0.9); keeping the 2 best groups drops expert 4.
    choice = torch.tensor([[0.9, 0.1, 0.6, 0.5, 0.9, 0.05, 0.1, 0.1]])
    assert sorted(select_experts(choice, n_group=1, topk_group=1, top_k=3)[0].tolist()) == [0, 2, 4]
    assert sorted(select_experts(choice, n_group=4, topk_group=2, top_k=3)[0].tolist()) == [0, 2, 3]


def test_router_bias_only_selects_and_gets_no_gradient():
    model = _model()
    router = routers(model)[0]
    x = torch.randn(16, model.config.hidden_size)
    weights, indices, scores = router(x)
    torch.testing.assert_close(weights, scores.gather(1, indices) / scores.gather(1, indices).sum(-1, keepdim=True)
                               * model.config.routed_scaling_factor)
    assert "e_score_correction_bias" not in dict(model.named_parameters())


def test_gradient_checkpointing_gives_the_same_gradients_and_counts_load_once():
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    grads, loads = [], []
    for checkpointing in (False, True):
        model = _model().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(ids, labels=ids).loss.backward()
        grads.append(model.model.layers[1].self_attn.kv_b_proj.weight.grad.clone())
        loads.append(torch.stack([r.load_accumulator.clone() for r in routers(model)]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert torch.equal(loads[0], loads[1]) and loads[0].sum() > 0


def test_float32_router_bias_and_rope_survive_bf16_cast():
    model = _model().to(torch.bfloat16)
    assert all(r.e_score_correction_bias.dtype == torch.float32 for r in routers(model))
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert model(torch.tensor([[1, 2, 3]])).logits.dtype == torch.bfloat16


def test_config_rejects_unsupported_settings_with_sentences():
    with pytest.raises(ValueError, match="topk_method"):
        DeepseekV3Config.tiny(topk_method="greedy")
    with pytest.raises(ValueError, match="multiple of n_group"):
        DeepseekV3Config.tiny(n_routed_experts=6)
    with pytest.raises(ValueError, match="attention_factor"):
        DeepseekV3Config.tiny(rope_parameters={"rope_type": "yarn", "factor": 4.0, "attention_factor": 1.0})
    with pytest.raises(ValueError, match="from_pretrained, which dequantises"):
        DeepseekV3Config.tiny(quantization_config={"quant_method": "fp8"})


def test_config_reads_deepseek_layout_and_keeps_unknown_keys():
    cfg = DeepseekV3Config.from_dict({
        "hidden_size": 32, "rope_theta": 5000.0, "custom_key": 7,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "mscale": 1.0,
                         "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1}})
    assert cfg.rope_parameters["rope_type"] == "yarn" and cfg.rope_parameters["rope_theta"] == 5000.0
    assert DeepseekV3Config.from_dict(cfg.to_hf_dict()).to_hf_dict() == cfg.to_hf_dict()
    assert cfg.to_hf_dict()["custom_key"] == 7


def test_name_map_round_trips_and_maps_to_vllm():
    model = _model()
    cfg = model.config
    for name in model.state_dict():
        assert names.from_hf(names.to_hf(name, cfg), cfg) == name
    L = cfg.num_hidden_layers
    expert = "mlp.experts.2.up_proj.weight"
    assert names.to_hf(f"mtp.0.block.{expert}", cfg) == f"model.layers.{L}.{expert}"
    assert names.from_hf(f"model.layers.{L}.shared_head.head.weight", cfg) is None
    assert names.to_vllm("model.layers.1.mlp.experts.5.up_proj.weight", cfg) == (
        "model.layers.1.mlp.experts.routed_experts.w13_weight", (5, "w3"))
    assert names.to_vllm("model.layers.0.mlp.gate_proj.weight", cfg) == ("model.layers.0.mlp.gate_up_proj.weight", 0)
    assert names.to_vllm("model.layers.0.self_attn.q_a_proj.weight", cfg, fused_qkv_a=True) == (
        "model.layers.0.self_attn.fused_qkv_a_proj.weight", 0)

"""Parity of our DeepSeek-V3 with transformers' DeepseekV3ForCausalLM, through checkpoints in both directions.

The tiny checkpoint has a non-zero router bias, group-limited routing (n_group=4, topk_group=2) and YaRN rope;
the first test proves each of those changes the logits, so parity cannot hold by ignoring one of them.
"""

import json

import pytest
import torch
from safetensors import safe_open

from actors.model import DeepseekV3Config, DeepseekV3ForCausalLM
from actors.model.balancing import routers

transformers = pytest.importorskip("transformers")

PARITY_ATOL = 1e-3  # required bound for fp32 logits; measured ~1e-6 (summation-order roundoff only)
ROUND_TRIP_ATOL = 1e-5  # same weights through the other library and back


def _ours(seed: int = 0) -> DeepseekV3ForCausalLM:
    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(DeepseekV3Config.tiny()).eval()
    for router in routers(model):
        router.e_score_correction_bias.normal_(0.0, 0.15)
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = _ours()
    path = tmp_path_factory.mktemp("ours")
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 128, (3, 48), generator=torch.Generator().manual_seed(1))


def _hf(path):
    return transformers.DeepseekV3ForCausalLM.from_pretrained(path, attn_implementation="eager").eval()


@torch.no_grad()
def test_bias_group_limit_and_yarn_each_change_the_logits(checkpoint, ids):
    model, _ = checkpoint
    reference = model(ids).logits
    assert reference.std() > 0.3, "logits too flat for a parity check to mean anything"
    gates = routers(model)
    saved = [r.e_score_correction_bias.clone() for r in gates]
    for r in gates:
        r.e_score_correction_bias.zero_()
    without_bias = model(ids).logits
    for r, b in zip(gates, saved):
        r.e_score_correction_bias.copy_(b)
    for r in gates:
        r.topk_group = r.n_group
    without_group_limit = model(ids).logits
    for r in gates:
        r.topk_group = model.config.topk_group
    assert (without_bias - reference).abs().max() > 100 * PARITY_ATOL
    assert (without_group_limit - reference).abs().max() > 100 * PARITY_ATOL
    attn = model.model.layers[0].self_attn
    assert attn.softmax_scale != pytest.approx(model.config.qk_head_dim ** -0.5)  # YaRN mscale_all_dim correction
    assert model.model.rotary_emb.magnitude != pytest.approx(1.0)  # YaRN mscale / mscale_all_dim on cos, sin


@torch.no_grad()
def test_our_checkpoint_loads_in_transformers_with_the_same_logits(checkpoint, ids):
    model, path = checkpoint
    hf = _hf(path)
    delta = (model(ids).logits - hf(ids).logits).abs().max().item()
    print(f"max |dlogits| ours vs transformers: {delta:.3e}")
    assert delta < PARITY_ATOL


@torch.no_grad()
def test_right_padded_batch_matches_transformers_on_real_tokens(checkpoint, ids):
    model, path = checkpoint
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    mask[2, 7:] = 0
    ours, theirs = model(ids, attention_mask=mask).logits, _hf(path)(ids, attention_mask=mask).logits
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max() < PARITY_ATOL


@torch.no_grad()
def test_transformers_checkpoint_loads_in_ours_with_the_same_logits(tmp_path, ids):
    cfg = DeepseekV3Config.tiny(num_nextn_predict_layers=0)
    torch.manual_seed(3)
    hf = transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**cfg.to_hf_dict())).eval()
    for layer in hf.model.layers[cfg.first_k_dense_replace:]:
        layer.mlp.gate.e_score_correction_bias.normal_(0.0, 0.15)
    hf.save_pretrained(tmp_path)
    ours = DeepseekV3ForCausalLM.from_pretrained(tmp_path).eval()
    assert (ours(ids).logits - hf(ids).logits).abs().max() < ROUND_TRIP_ATOL


@torch.no_grad()
def test_round_trip_through_transformers_keeps_logits(checkpoint, ids, tmp_path):
    model, path = checkpoint
    _hf(path).save_pretrained(tmp_path)
    back = DeepseekV3ForCausalLM.from_pretrained(tmp_path).eval()  # transformers drops MTP; main model must match
    assert (back(ids).logits - model(ids).logits).abs().max() < ROUND_TRIP_ATOL


def test_checkpoint_uses_deepseek_names_and_config_keys(checkpoint):
    model, path = checkpoint
    cfg = model.config
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "deepseek_v3" and config["architectures"] == ["DeepseekV3ForCausalLM"]
    assert config["topk_method"] == "noaux_tc" and config["scoring_func"] == "sigmoid"
    assert config["rope_parameters"]["rope_type"] == "yarn"
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("model.layers.1.mlp.gate.e_score_correction_bias").dtype == torch.float32
    mtp = f"model.layers.{cfg.num_hidden_layers}"
    for name in ["model.layers.1.mlp.experts.7.gate_proj.weight", "model.layers.1.mlp.experts.0.down_proj.weight",
                 "model.layers.2.mlp.shared_experts.up_proj.weight", "model.layers.1.mlp.gate.weight",
                 f"{mtp}.enorm.weight", f"{mtp}.hnorm.weight", f"{mtp}.eh_proj.weight",
                 f"{mtp}.shared_head.norm.weight",
                 f"{mtp}.shared_head.head.weight", f"{mtp}.embed_tokens.weight", f"{mtp}.self_attn.kv_b_proj.weight",
                 f"{mtp}.mlp.experts.3.up_proj.weight", f"{mtp}.mlp.gate.e_score_correction_bias"]:
        assert name in keys, name
    assert not any(k.startswith("mtp.") or ".block." in k for k in keys)

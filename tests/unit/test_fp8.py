"""DeepSeek-V3's block-wise FP8 recipe, torch reference path: tiles, scales, the three GEMMs, the model swap and
the FP8 checkpoint format."""

import json

import pytest
import torch
from safetensors import safe_open

from actors.model import DeepseekV3Config, DeepseekV3ForCausalLM, fp8
from actors.model.fp8 import (E4M3_MAX, FP8Linear, FP8LinearFactory, FP8Recipe, dequantize_blocks, dequantize_rows,
                              quantize_blocks, quantize_rows, relative_error, scaled_gemm)


def _grads(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor, recipe: FP8Recipe | None):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = fp8.fp8_linear(x, w, recipe) if recipe else x @ w.T
    y.backward(g)
    return y.detach(), x.grad, w.grad


@pytest.mark.parametrize("power_of_two", [False, True])
def test_fp8_linear_forward_and_gradients_within_5_percent_of_fp32(power_of_two):
    torch.manual_seed(0)
    x, w = torch.randn(3, 100, 512), torch.randn(384, 512) * 0.02
    g = torch.randn(3, 100, 384)
    exact = _grads(x, w, g, None)
    approx = _grads(x, w, g, FP8Recipe(power_of_two_scales=power_of_two))
    for name, a, e in zip(("forward", "dgrad", "wgrad"), approx, exact):
        err = relative_error(a, e)
        # E4M3 keeps 3 mantissa bits: ~3.7% on random data (measured); an unquantised path would give ~0.
        assert 0.02 < err < 0.05, f"{name}: relative error {err:.4f}"


def test_gradients_use_each_gemms_tiles():
    """dgrad quantises dy along N and reuses W's blocks; wgrad quantises dy and x along the token axis."""
    torch.manual_seed(1)
    x, w, g = torch.randn(200, 300), torch.randn(260, 300), torch.randn(200, 260)
    g[:, 0] *= 1e6  # one loud output feature: per-token tiles of dy would flatten the rest of every row
    _, dx, dw = _grads(x, w, g, FP8Recipe())
    wq, sw = quantize_blocks(w)
    expect_dx = scaled_gemm(*quantize_rows(g), wq.t().contiguous(), sw.t().contiguous(), 128, torch.float32)
    expect_dw = scaled_gemm(*quantize_rows(g.t().contiguous()), *quantize_rows(x.t().contiguous()), 1, torch.float32)
    assert torch.equal(dx, expect_dx) and torch.equal(dw, expect_dw)
    # Token-axis tiles keep the quiet features of dW accurate (the loud one has its own rows of dy^T); tiles along N
    # would share a scale with it and round them to zero: 73% error instead of 3.6%.
    assert relative_error(dw[1:128], g[:, 1:128].T @ x) < 0.05


def test_scales_are_amax_over_448_and_values_saturate_at_448():
    x = torch.randn(4, 256)
    x[0, :128] = 0.0  # an all-zero tile: finite scale, zeros out
    x[1, 5] = 1e6
    q, s = quantize_rows(x)
    assert s.shape == (4, 2) and q.dtype == torch.float8_e4m3fn
    assert torch.all(q[0, :128].float() == 0) and torch.isfinite(s[0, 0])
    amax = x[:, 128:].abs().amax(dim=1)
    assert torch.allclose(s[:, 1], amax / E4M3_MAX)
    assert torch.all(q.float().abs().amax(dim=1) == E4M3_MAX)  # each row's largest value maps to 448 exactly
    assert float(q[1, 5]) == E4M3_MAX
    huge = torch.tensor([[600.0, -1e9, 1.0]])
    assert torch.equal(fp8._to_e4m3(huge).float(), torch.tensor([[448.0, -448.0, 1.0]]))


def test_power_of_two_scales():
    torch.manual_seed(2)
    w = torch.randn(300, 200) * 0.05
    q, s = quantize_blocks(w, power_of_two=True)
    assert torch.equal(s, torch.exp2(torch.log2(s).round()))
    assert float(q.float().abs().max()) <= E4M3_MAX
    plain, _ = quantize_blocks(w)
    assert relative_error(dequantize_blocks(q, s), w) < 0.05
    assert not torch.equal(q.float(), plain.float())  # a real difference: amax no longer lands on 448


def test_edges_that_are_not_multiples_of_128():
    torch.manual_seed(3)
    x = torch.randn(7, 200) * 0.01
    x[:, -1] = 3.0  # the short last tile (72 columns): its scale comes from its real elements only
    q, s = quantize_rows(x)
    assert s.shape == (7, 2) and torch.allclose(s[:, 1], torch.full((7,), 3.0 / E4M3_MAX))
    assert relative_error(dequantize_rows(q, s), x) < 0.05
    w = torch.randn(130, 260)
    wq, ws = quantize_blocks(w)
    assert ws.shape == (2, 3)
    assert torch.allclose(ws[1, 2], w[128:, 256:].abs().max() / E4M3_MAX)
    assert relative_error(dequantize_blocks(wq, ws), w) < 0.05
    # Empty inputs (a routed expert that got no tokens) give empty outputs and zero weight gradients.
    y, dx, dw = _grads(torch.randn(0, 260), w, torch.randn(0, 130), FP8Recipe())
    assert y.shape == (0, 130) and dx.shape == (0, 260) and torch.equal(dw, torch.zeros_like(w))


def test_weight_blocks_serve_the_transpose():
    w = torch.randn(256, 384)
    q, s = quantize_blocks(w)
    qt, st = quantize_blocks(w.t().contiguous())
    assert torch.equal(qt.float(), q.t().float()) and torch.equal(st, s.t())


def _tiny(seed: int = 0, linear=None) -> DeepseekV3ForCausalLM:
    torch.manual_seed(seed)
    return DeepseekV3ForCausalLM(DeepseekV3Config.tiny(hidden_size=64), linear)


def test_conversion_swaps_only_eligible_linears_and_keeps_parameters():
    model = _tiny()
    before = {name: p for name, p in model.named_parameters()}
    swapped = fp8.convert_to_fp8(model)
    assert dict(model.named_parameters()) == before  # same Parameter objects: the optimizer sees no change
    kinds = {name.rsplit(".", 1)[-1] for name in swapped}
    assert kinds == {"q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj",
                     "down_proj"}
    assert any(n.startswith("mtp.0.block.") for n in swapped)
    kept = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not isinstance(m, FP8Linear)]
    assert sorted(kept) == ["lm_head", "mtp.0.eh_proj"]
    assert model.fp8_recipe == FP8Recipe()
    # A model built with the FP8 factory has the same layers and, from the same seed, the same weights.
    built = _tiny(linear=FP8LinearFactory(0.1, FP8Recipe()))
    assert [n for n, m in built.named_modules() if isinstance(m, FP8Linear)] == swapped
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), _tiny().state_dict().values()))


def test_fp8_model_trains_and_stays_close_to_fp32():
    ids = torch.randint(0, 128, (4, 24))
    models = {"fp32": _tiny(), "fp8": _tiny()}
    fp8.convert_to_fp8(models["fp8"])
    losses = {}
    for name, model in models.items():
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        start = model.model.layers[1].self_attn.o_proj.weight.detach().clone()
        for _ in range(8):
            loss = model(ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.setdefault(name, []).append(float(loss.detach()))
        assert not torch.equal(start, model.model.layers[1].self_attn.o_proj.weight)
    assert losses["fp8"][-1] < losses["fp8"][0] - 0.1, losses["fp8"]
    assert abs(losses["fp8"][0] - losses["fp32"][0]) / losses["fp32"][0] < 0.01, losses


def test_fp8_checkpoint_round_trip(tmp_path):
    torch.manual_seed(4)
    model = _tiny()
    model.model.layers[1].mlp.gate.e_score_correction_bias.normal_(0, 0.1)
    fp8.convert_to_fp8(model, FP8Recipe(export="fp8"))
    model.save_pretrained(tmp_path / "fp8")
    config = json.loads((tmp_path / "fp8" / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                             "weight_block_size": [128, 128]}
    with safe_open(str(tmp_path / "fp8" / "model.safetensors"), framework="pt") as f:
        disk = {k: f.get_tensor(k) for k in f.keys()}
    expert = "model.layers.1.mlp.experts.3.down_proj"  # per-expert names, as DeepSeek's release stores them
    assert disk[f"{expert}.weight"].dtype == torch.float8_e4m3fn
    assert disk[f"{expert}.weight_scale_inv"].shape == (1, 1)
    assert disk["model.layers.3.self_attn.o_proj.weight_scale_inv"].dtype == torch.float32  # the MTP block
    assert disk["lm_head.weight"].dtype == torch.bfloat16 and "lm_head.weight_scale_inv" not in disk
    assert disk["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == torch.float32

    loaded = DeepseekV3ForCausalLM.from_pretrained(tmp_path / "fp8")
    ours, back = model.state_dict(), loaded.state_dict()
    name = "model.layers.1.mlp.experts.3.down_proj.weight"
    assert torch.equal(back[name], dequantize_blocks(*quantize_blocks(ours[name])))
    assert torch.equal(back["lm_head.weight"], ours["lm_head.weight"].bfloat16().float())
    assert torch.equal(back["model.layers.1.mlp.gate.e_score_correction_bias"],
                       ours["model.layers.1.mlp.gate.e_score_correction_bias"])
    # Quantising the loaded weights again gives back the exported E4M3 values and scales.
    q, s = quantize_blocks(back[name])
    assert torch.equal(q.float(), disk[f"{expert}.weight"].float())
    assert torch.equal(s, disk[f"{expert}.weight_scale_inv"])


def test_export_formats_bf16_and_master(tmp_path):
    model = _tiny()
    fp8.convert_to_fp8(model, FP8Recipe(export="bf16"))
    model.save_pretrained(tmp_path / "bf16")
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    back = DeepseekV3ForCausalLM.from_pretrained(tmp_path / "bf16").state_dict()
    w = model.state_dict()["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(back["model.layers.0.mlp.up_proj.weight"],
                       dequantize_blocks(*quantize_blocks(w)).bfloat16().float())  # what the FP8 GEMMs multiply by
    model.fp8_recipe = FP8Recipe(export="master")
    model.save_pretrained(tmp_path / "master")
    back = DeepseekV3ForCausalLM.from_pretrained(tmp_path / "master", fp8=True)
    assert torch.equal(back.state_dict()["model.layers.0.mlp.up_proj.weight"], w)
    assert isinstance(back.model.layers[0].mlp.up_proj, FP8Linear) and back.fp8_recipe == FP8Recipe()


def test_fp8_checkpoint_problems_are_reported(tmp_path):
    model = _tiny()
    fp8.convert_to_fp8(model, FP8Recipe(export="fp8"))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"]["weight_block_size"] = [64, 64]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"weight_block_size is \[64, 64\], expected \[128, 128\]"):
        DeepseekV3ForCausalLM.from_pretrained(tmp_path)
    tensors = {"a.weight": torch.zeros(4, 4, dtype=torch.float8_e4m3fn)}
    with pytest.raises(ValueError, match="without a weight_scale_inv"):
        fp8.dequantize_checkpoint(tensors, "ckpt")
    tensors["a.weight_scale_inv"] = torch.ones(2, 1)
    with pytest.raises(ValueError, match=r"needs \(1, 1\)"):
        fp8.dequantize_checkpoint(tensors, "ckpt")


def test_trainer_loads_v3_in_fp8_and_refuses_other_models(tmp_path):
    from actors.trainer import load_causal_lm

    _tiny().save_pretrained(tmp_path / "v3")
    model = load_causal_lm(str(tmp_path / "v3"), torch.float32, fp8=True)
    assert model.fp8_recipe == FP8Recipe() and isinstance(model.model.layers[0].mlp.down_proj, FP8Linear)
    assert load_causal_lm(str(tmp_path / "v3"), torch.float32).fp8_recipe is None
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(ValueError, match="fp8: true needs our DeepSeek-V3"):
        load_causal_lm(str(tmp_path / "qwen"), torch.float32, fp8=True)

"""Cases for the Triton FP8 kernels against the torch reference, collected by test_fp8_kernels.py: in its own
process on a CUDA machine, in a child process with TRITON_INTERPRET=1 elsewhere (Triton's interpreter must be on
before triton is first imported, and must not leak into other tests). Shapes are small so the interpreter finishes
in seconds."""

import pytest
import torch

from actors.model import fp8
from actors.model import fp8_kernels as kernels
from actors.model.fp8 import FP8Recipe, relative_error

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
assert DEVICE == "cuda" or kernels.INTERPRETED, "without CUDA these cases need TRITON_INTERPRET=1 (test_fp8_kernels.py)"
SHAPES = [(70, 200), (128, 128), (1, 300), (130, 260)]


def _data(shape, seed=0, spread=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    if spread:  # magnitudes over 2^-12..2^8: E4M3 normals, subnormals and rounding across powers of two
        x = x * torch.exp2(torch.randint(-12, 8, shape, generator=g).float())
    return x.to(DEVICE)


def _same_e4m3(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of E4M3 values that differ (the GPU's division may move a value by one rounding step)."""
    return float((a.float() != b.float()).float().mean())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("power_of_two", [False, True])
def test_quantize_rows_matches_reference(shape, power_of_two):
    x = _data(shape)
    q, s = kernels.quantize_rows(x, power_of_two)
    q_ref, s_ref = fp8.quantize_rows(x, power_of_two)
    assert s.shape == s_ref.shape and torch.allclose(s, s_ref, rtol=1e-6, atol=0)
    assert _same_e4m3(q, q_ref) <= (0 if DEVICE == "cpu" else 1e-3)


@pytest.mark.parametrize("shape", SHAPES)
def test_quantize_and_dequantize_blocks_match_reference(shape):
    w = _data(shape, seed=1, spread=False).bfloat16()
    q, s = kernels.quantize_blocks(w)
    q_ref, s_ref = fp8.quantize_blocks(w)
    assert torch.allclose(s, s_ref, rtol=1e-6, atol=0) and _same_e4m3(q, q_ref) <= (0 if DEVICE == "cpu" else 1e-3)
    back = kernels.dequantize_blocks(q_ref, s_ref, torch.float32)
    assert torch.equal(back, fp8.dequantize_blocks(q_ref, s_ref))
    assert relative_error(back, w.float()) < 0.05


@pytest.mark.parametrize("m,n,k", [(70, 150, 200), (128, 256, 128), (33, 130, 384), (5, 7, 129)])
@pytest.mark.parametrize("b_rows_per_scale", [128, 1])
def test_scaled_gemm_matches_reference(m, n, k, b_rows_per_scale):
    a, sa = fp8.quantize_rows(_data((m, k), seed=2, spread=False))
    b_hp = _data((n, k), seed=3, spread=False)
    b, sb = fp8.quantize_blocks(b_hp) if b_rows_per_scale == 128 else fp8.quantize_rows(b_hp)
    c = kernels.scaled_gemm(a, sa, b, sb, b_rows_per_scale, torch.float32)
    ref = fp8.scaled_gemm(a, sa, b, sb, b_rows_per_scale, torch.float32)
    # The same products and scales summed in another order: fp32 rounding only.
    assert relative_error(c, ref) < 1e-5
    assert kernels.scaled_gemm(a, sa, b, sb, b_rows_per_scale, torch.bfloat16).dtype == torch.bfloat16


def test_fp8_linear_on_triton_matches_torch_reference():
    x, w, g = _data((2, 40, 260), 4, False), _data((130, 260), 5, False) * 0.05, _data((2, 40, 130), 6, False)
    results = {}
    for kind in ("triton", "torch"):
        xk, wk = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = fp8.fp8_linear(xk, wk, FP8Recipe(kernels=kind))
        y.backward(g)
        results[kind] = (y.detach(), xk.grad, wk.grad)
    for name, a, b in zip(("forward", "dgrad", "wgrad"), results["triton"], results["torch"]):
        assert relative_error(a, b) < 1e-4, name
    exact = x @ w.T
    assert 0.01 < relative_error(results["triton"][0], exact) < 0.05  # FP8 numerics, not a full-precision path


def test_wrappers_reject_inputs_they_cannot_take():
    x = _data((64, 256), spread=False)
    with pytest.raises(AssertionError, match="contiguous"):
        kernels.quantize_rows(x.t())
    with pytest.raises(AssertionError, match="dtype"):
        kernels.quantize_rows(x.to(torch.int32))
    a, sa = fp8.quantize_rows(x)
    with pytest.raises(AssertionError, match="same K"):
        kernels.scaled_gemm(a, sa, a[:, :128].contiguous(), sa[:, :1].contiguous(), 1, torch.float32)
    with pytest.raises(AssertionError, match="sb shape"):
        kernels.scaled_gemm(a, sa, a, sa, 128, torch.float32)

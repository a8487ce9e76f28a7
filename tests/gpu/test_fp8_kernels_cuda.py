"""The FP8 Triton kernels on the GPU at DeepSeek-V3's GEMM shapes, against the torch reference computed on the same
GPU (tests/unit/test_fp8_kernels.py covers small and ragged shapes, on CUDA when there is one and in Triton's
interpreter otherwise). Needs CUDA and triton; not yet run on a GPU."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the FP8 Triton kernels)")
pytest.importorskip("triton", reason="the FP8 kernels need triton")

from actors.model import fp8  # noqa: E402
from actors.model.fp8 import relative_error  # noqa: E402

M = 512
V3_SHAPES = [(7168, 2048), (7168, 576), (2048, 7168), (1536, 24576)]  # (K, N) of V3's projections
E4M3_STEP_MISMATCH = 1e-3  # share of elements whose E4M3 code may differ by one step (rounding of x / scale)


@pytest.fixture(autouse=True)
def _exact_fp32_matmul():
    """The reference multiplies in fp32: keep TF32 off so it is the exact side of the comparison."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def _operands(k: int, n: int, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    a = torch.randn(M, k, device="cuda", generator=g).bfloat16()
    b = (torch.randn(n, k, device="cuda", generator=g) * 0.02).bfloat16()
    return a, b


def _differing(q: torch.Tensor, q_ref: torch.Tensor) -> float:
    return float((q.view(torch.uint8) != q_ref.view(torch.uint8)).float().mean())


@pytest.mark.parametrize("k,n", V3_SHAPES)
def test_kernels_match_the_reference_at_v3_shapes(k, n):
    kernels = fp8.triton_kernels()
    assert kernels is not None
    a, b = _operands(k, n, seed=k + n)
    aq, sa = kernels.quantize_rows(a)
    aq_ref, sa_ref = fp8.quantize_rows(a)
    bq, sb = kernels.quantize_blocks(b)
    bq_ref, sb_ref = fp8.quantize_blocks(b)
    assert torch.allclose(sa, sa_ref, rtol=1e-6, atol=0) and torch.allclose(sb, sb_ref, rtol=1e-6, atol=0)
    assert _differing(aq, aq_ref) <= E4M3_STEP_MISMATCH and _differing(bq, bq_ref) <= E4M3_STEP_MISMATCH
    c = kernels.scaled_gemm(aq_ref, sa_ref, bq_ref, sb_ref, 128, torch.float32)
    ref = fp8.scaled_gemm(aq_ref, sa_ref, bq_ref, sb_ref, 128, torch.float32)
    # The same E4M3 products: Hopper's FP8 MMA accumulates with fewer bits inside each 128-deep block before the
    # kernel promotes to fp32, hence more than fp32 rounding but far below quantisation error.
    assert relative_error(c, ref) < 2e-3
    # Against the unquantised bf16 product: E4M3 quantisation error (about 3-4% on random data).
    assert relative_error(kernels.scaled_gemm(aq, sa, bq, sb, 128, torch.bfloat16), a.float() @ b.float().T) < 0.06


def test_fp8_linear_gradients_on_triton_match_the_reference():
    """FP8Linear's three GEMMs (forward, input and weight gradient) through Triton and through the torch reference."""
    torch.manual_seed(0)
    x = torch.randn(M, 2048, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(1536, 2048, device="cuda") * 0.02).bfloat16()
    dy = torch.randn(M, 1536, device="cuda", dtype=torch.bfloat16)
    grads = {}
    for kernels in ("triton", "torch"):
        xi, wi = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        y = fp8.fp8_linear(xi, wi, fp8.FP8Recipe(kernels=kernels))
        y.backward(dy)
        grads[kernels] = (y.detach(), xi.grad, wi.grad)
    for got, want in zip(grads["triton"], grads["torch"]):
        assert relative_error(got, want) < 1e-2  # bf16 outputs of the same FP8 products

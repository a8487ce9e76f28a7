"""The Triton FP8 kernels against the torch reference (cases in fp8_kernel_cases.py): directly on a CUDA machine;
elsewhere in a child pytest with TRITON_INTERPRET=1, because the interpreter must be switched on before triton is
first imported and would otherwise leak into every later test and Ray worker of this process."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

pytest.importorskip("triton", reason="triton is not installed: the FP8 kernels cannot run here (the torch "
                                     "reference path is tested in test_fp8.py)")

CASES = "tests/unit/fp8_kernel_cases.py"

if torch.cuda.is_available():
    from tests.unit.fp8_kernel_cases import *  # noqa: F401,F403 (collected here: the GPU run)
else:
    def test_kernels_match_the_reference_in_the_triton_interpreter():
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        proc = subprocess.run([sys.executable, "-m", "pytest", CASES, "-q", "-p", "no:cacheprovider"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=600)
        report = proc.stdout[-6000:] + proc.stderr[-2000:]
        assert proc.returncode == 0, report
        assert " passed" in proc.stdout and "skipped" not in proc.stdout, report

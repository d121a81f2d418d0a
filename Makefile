# The two commands a newcomer needs:  `make run`  (the detector on a local broker)  and  `make test`.
# Everything else is installed by these targets: a virtualenv from the hashed lock file, the Kafka
# broker's jars from Maven (on first use). Needs Python 3.11, Java 17+ and Maven on the PATH.

PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
# The feature engine compiled with mypyc (app/features/compiled.py); rebuilt when a source changes.
COMPILED := build/mypyc/ivt-compiled.json
ENGINE := $(addprefix app/features/,buckets.py distinct.py state.py engine.py)

.PHONY: install run test test-unit lint bench-short schemas clean

$(STAMP): requirements.lock pyproject.toml
	@rm -f $(VENV)/.installed-*
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

# Without a C compiler the build fails and the Python modules run: a warning, not an error.
$(COMPILED): $(STAMP) $(ENGINE)
	@$(BIN)/python -m app.features.build_engine > build-engine.log 2>&1 \
		&& echo "feature engine compiled (mypyc)" \
		|| echo "warning: could not compile the feature engine (see build-engine.log); the Python modules run"

install: $(STAMP) $(COMPILED)

run: install
	$(BIN)/ivt demo

test: install
	$(BIN)/pytest

test-unit: install
	$(BIN)/pytest -m "not integration"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

# The short form of the live-path benchmark (CI runs it so the script keeps working; the figures in
# the README come from the full form written beside them).
bench-short: install
	$(BIN)/python benchmarks/bench_live.py --backlog 5000 --latency-seconds 5 --scale-out 2

schemas: install
	$(BIN)/ivt schemas

clean:
	rm -rf $(VENV) .cache var .pytest_cache .hypothesis build build-engine.log

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

# Every script in benchmarks/ in a short form, one after another (about 5 minutes on 2 cores): CI runs
# it so each keeps working, and tests/unit/test_benchmarks_short.py fails when a script is left out.
# The figures in docs/performance.md come from the full forms written beside them.
bench-short: install
	$(BIN)/python benchmarks/bench_features.py --clicks 20000 --gateway-hours 6
	$(BIN)/python benchmarks/bench_scorer.py --seconds 0.2 --providers cpu
	$(BIN)/python benchmarks/bench_train.py --short
	$(BIN)/python benchmarks/bench_calibration.py --short --caps none,0.05
	$(BIN)/python benchmarks/bench_producer.py --messages 3000 --repeat 1
	$(BIN)/python benchmarks/bench_tables.py --clicks 3000 --hop-clicks 500
	$(BIN)/python benchmarks/faust_throughput.py --messages 3000 \
		--variant 'raw:depth=4;baseline;take_producer;manual;take_noack:cython,nomonitor,poll=2000,buf=16384,fetch=4194304,fastdrain'
	$(BIN)/python benchmarks/bench_live.py --backlog 5000 --latency-seconds 5 --scale-out 2
	$(BIN)/python benchmarks/bench_replay.py --backlog 5000 --latency-rate 100 --latency-seconds 5
	$(BIN)/python benchmarks/drain_timeline.py --runs 1 --backlog 3000

schemas: install
	$(BIN)/ivt schemas

clean:
	rm -rf $(VENV) .cache var .pytest_cache .hypothesis build build-engine.log

# esproxy — the two commands a newcomer needs are `make run` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run stop status test test-real chaos fuzz lint docs clean bench bench-peer test-copy-100k

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,codecs,demo]'
	touch $(STAMP)

run: install           ## start clusters A and B, the broker and both roles under supervisord
	ops/ctl up

stop:                  ## stop everything started by `make run`
	ops/ctl down

status:
	ops/ctl status

test: install
	$(BIN)/pytest -q --durations=15

# The tests marked `real` against real engines (tests/engines): Apache Kafka, Elasticsearch 8 and OpenSearch 2,
# JVMs whose jars Maven resolves into ~/.m2 (set ESPROXY_MAVEN_REPO for another place). Needs java (17+), javac
# and mvn; `make test` needs none of them. Both directions: A=Elasticsearch -> B=OpenSearch, then the reverse.
# elasticsearch-py 8 comes with the test-real extra, elasticsearch-py 7 in a venv of its own ($(VENV)/es7).
REAL_STAMP := $(VENV)/.real-installed
$(REAL_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,codecs,demo,test-real]'
	$(PYTHON) -m venv $(VENV)/es7
	$(VENV)/es7/bin/pip install --quiet --disable-pip-version-check 'elasticsearch>=7.17,<8'
	touch $(REAL_STAMP)

test-real: $(REAL_STAMP)
	$(BIN)/python tests/engines resolve
	$(BIN)/pytest -q --durations=10 --engines=real --real-pair=es-os
	$(BIN)/pytest -q --durations=10 --engines=real --real-pair=os-es

# Randomized fault schedules with a history checker (issue 25; docs/reliability.md): CHAOS_SCHEDULES schedules
# (seeds CHAOS_SEED, +1, ...) on Apache Kafka + Elasticsearch (A) + OpenSearch (B) from tests/engines, each 30 s
# of writes through the proxy under faults drawn from its seed, then checked. Not in CI (.ci/run): about 45 s
# per schedule. `make test` runs a short version (tests/test_chaos_short.py, 3 schedules on the stand-ins).
# CHAOS_ARGS: more options of `python -m tests.chaos` (--engines stand-ins, --load 20, --real-pair os-es...).
CHAOS_SEED ?= 1
CHAOS_SCHEDULES ?= 20
chaos: $(REAL_STAMP)
	$(BIN)/python tests/engines resolve
	$(BIN)/python -m tests.chaos --engines real --seed $(CHAOS_SEED) --schedules $(CHAOS_SCHEDULES) $(CHAOS_ARGS)

# The long fuzz campaign (docs/operations.md, Security, Fuzzing): the property-based tests (tests/test_fuzz_*.py) with hypothesis's
# "long" profile, 20,000 examples per property, a tenth or a twentieth of that for the costly ones (the proxy's
# raw-socket properties, big messages, tracemalloc); `make test` runs 150 per property. Prints each property's
# examples, time and events. About 11 minutes on a busy 2-core machine.
fuzz: install
	HYPOTHESIS_PROFILE=long $(BIN)/pytest -q --hypothesis-show-statistics tests/test_fuzz_*.py

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,codecs,demo,bench]'
	touch $(BENCH_STAMP)

# Side-by-side benchmark (issue 6) on free loopback ports; BENCH_N=200000 is the seed's full run.
# Installs wrk (Debian package) itself when missing. Report: bench/results/latest.md (+ a PNG chart).
# BENCH_ENGINES=real: A = Elasticsearch 8, B = OpenSearch 2, Kafka 3.9 (tests/engines; needs java, javac, mvn).
# BENCH_PEER=PATH: S1 and S2 also run through the Go elasticproxy binary at PATH (`--peer`; `make bench-peer`
# builds one into var/peer/elasticproxy; docs/performance.md).
bench: $(BENCH_STAMP)
	BENCH_COMMAND="make bench$(if $(BENCH_N), BENCH_N=$(BENCH_N))$(if $(BENCH_ENGINES), BENCH_ENGINES=$(BENCH_ENGINES))$(if $(BENCH_ARGS), BENCH_ARGS=\"$(BENCH_ARGS)\")$(if $(BENCH_PEER), BENCH_PEER=$(BENCH_PEER))" $(BIN)/python -m bench $(if $(BENCH_N),--n $(BENCH_N)) $(if $(BENCH_ENGINES),--engines $(BENCH_ENGINES)) $(if $(BENCH_PEER),--peer $(BENCH_PEER)) $(BENCH_ARGS)

# The Go original for `make bench BENCH_PEER=var/peer/elasticproxy`: built with `go build` from PEER_SRC (a source
# directory, or a git repository to clone; default github.com/bingoohuang/elasticproxy at ed4d43a), its go.mod as is.
bench-peer:
	ops/build-peer $(PEER_SRC)

lint: install
	$(BIN)/ruff check esproxy tests bench ops/demo-server ops/update-config-reference
	$(BIN)/ruff format --check esproxy tests bench
	$(BIN)/python ops/update-config-reference --check
	$(BIN)/lint-imports --no-cache  # the floors and the roles' faces: pyproject.toml, [tool.importlinter]

docs: install          ## regenerate the tables declared in code: README's config reference, docs/operations.md's signals
	$(BIN)/python ops/update-config-reference

clean: stop
	rm -rf $(VENV) var *.egg-info

# The initial copy of 100,000 existing documents under a concurrent write load (the suite runs 20,000).
test-copy-100k: install
	SYNC_COPY_DOCS=100000 $(BIN)/pytest -q tests/test_sync_copy.py -k concurrent

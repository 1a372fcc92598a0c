# tether developer entry points. `make check` is exactly what CI (.ci/run) runs: ruff check,
# ruff format --check and mypy strict (seconds), then `make test`.
#
#   make demo        zero-setup demo (only Python 3.11 needed: no Java, Kafka or Redis)
#   make test        all tests, incl. integration against real Kafka + Redis (started for you)
#   make unit        unit tests only, no services
#   make soak        long fault-injection runs (tests/fault -m soak; sizes: TETHER_SOAK_*), ~1 h
#   make faults-net  network faults through Toxiproxy (built from the Go module proxy by
#                    scripts/toxiproxy.sh) and a full broker disk (a tmpfs; needs root), ~10 min
#   make cluster     a three-broker Kafka cluster on loopback (19092-19094; services.sh up-cluster),
#                    then its fault tests (tests/fault -m cluster: the leader broker killed, workers
#                    killed in a loop), ~10 min; stops the cluster after (CLUSTER_KEEP=1 keeps it)
#   make check       ruff check + ruff format --check + mypy, then `make test` (= CI, .ci/run)
#   make services    start Apache Kafka (KRaft) + Redis on loopback, and a second, secured broker
#                    (SASL_SSL + ACLs, docs/kafka-security.md); services-down stops them
#   make schemas     regenerate the committed JSON Schemas
#   make docs        regenerate the settings reference, docs/configuration.md
#   make otel-collector-e2e  build a real OpenTelemetry Collector (OTLP receiver + Kafka exporter;
#                    Go, minutes, cached in .services/otelcol) and run SDK spans through it,
#                    tether ingest otlp and a worker (docs/otel.md; not part of `make test`)
#   make bench       benchmark harness, every figure P1-P6 (~30 min; ARGS=--quick: a few minutes)
#   make clean       remove the venv, caches and build output (keeps .services/; see services-clean)

PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tether-installed
PYTEST_ARGS ?=

# Where the services listen; scripts/services.sh reads the same variables.
TETHER_KAFKA_PORT ?= 9092
TETHER_REDIS_PORT ?= 6379
export TETHER_KAFKA_PORT TETHER_REDIS_PORT
SERVICES_ENV := TETHER_KAFKA_BOOTSTRAP=$${TETHER_KAFKA_BOOTSTRAP:-127.0.0.1:$(TETHER_KAFKA_PORT)} \
                TETHER_REDIS_URL=$${TETHER_REDIS_URL:-redis://127.0.0.1:$(TETHER_REDIS_PORT)/0}

# mypy is strict on src/ and streams/; a directory with no Python files yet is left out
# (mypy rejects an empty target).
MYPY_TARGETS = $(foreach d,src streams,$(if $(shell find $(d) -name '*.py' 2>/dev/null | head -n 1),$(d)))

.DEFAULT_GOAL := help
.PHONY: soak faults-net decisions-e2e
browser:  ## Debian's chromium + chromium-driver for the console's browser test
	bash scripts/browser.sh

.PHONY: browser
.PHONY: help venv demo test unit integration check lint typecheck fmt services services-down bench \
        services-status services-clean schemas docs clean otel-collector-e2e cluster cluster-down

help:
	@sed -n 's/^#   //p' $(MAKEFILE_LIST)

# The venv is rebuilt only when pyproject.toml changes (or the venv is gone).
venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@# xds-protos (the Envoy protos) ships an older copy of the opentelemetry/proto modules;
	@# whichever package pip installs last wins. opentelemetry-proto's must: reinstall it.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
	  "opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	@touch $@

demo: venv
	$(BIN)/tether demo

test: venv services browser
	$(SERVICES_ENV) $(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest -m 'not integration' $(PYTEST_ARGS)

integration: venv services browser
	$(SERVICES_ENV) $(BIN)/pytest -m integration $(PYTEST_ARGS)

# The decision log against a gateway's Watcher through a real worker (~15-40 s, not in `make test`).
decisions-e2e: venv services
	$(SERVICES_ENV) TETHER_DECISIONS_E2E=1 $(BIN)/pytest tests/integration/test_decisions_enforcement.py $(PYTEST_ARGS)

# The fast fault-injection variants run in `make test`; their long versions only here. Figures
# are printed at the end and written to tests/fault/out/ (docs/RELIABILITY.md).
soak: venv services
	$(SERVICES_ENV) $(BIN)/pytest -m soak tests/fault $(PYTEST_ARGS)

# Issue 24: latency, a stall and a cut between the worker and the broker and between the
# registry sync and Redis (Toxiproxy), and a full disk under a private broker's log directory.
faults-net: venv services
	bash scripts/toxiproxy.sh
	$(SERVICES_ENV) $(BIN)/pytest -m faults_net tests/fault $(PYTEST_ARGS)

# Replication faults need three brokers: outside `make test` (minutes, and three more JVMs).
# Redis is the shared one (`services.sh up-redis`); the tests read the cluster from env-cluster.
CLUSTER_KEEP ?=
cluster: venv
	bash scripts/services.sh up-redis
	bash scripts/services.sh up-cluster >/dev/null
	@eval "$$(bash scripts/services.sh env-cluster)"; rc=0; \
	  echo "TETHER_CLUSTER_BOOTSTRAP=$$TETHER_CLUSTER_BOOTSTRAP $(BIN)/pytest -m cluster tests/fault"; \
	  TETHER_REDIS_URL=$${TETHER_REDIS_URL:-redis://127.0.0.1:$(TETHER_REDIS_PORT)/0} \
	    $(BIN)/pytest -m cluster tests/fault $(PYTEST_ARGS) || rc=$$?; \
	  if [ -z "$(CLUSTER_KEEP)" ]; then bash scripts/services.sh down-cluster; fi; exit $$rc

cluster-down:
	bash scripts/services.sh down-cluster

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	@if [ -z "$(strip $(MYPY_TARGETS))" ]; then echo "mypy: no Python files in src/ or streams/ yet"; \
	else echo "$(BIN)/mypy $(MYPY_TARGETS)"; $(BIN)/mypy $(MYPY_TARGETS); fi

check: lint typecheck
	$(MAKE) test

fmt: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The secured broker creates its ACLs with tether itself (confluent-kafka): it needs the venv.
services: venv
	bash scripts/services.sh up
	TETHER_VENV_PYTHON=$(abspath $(BIN))/python bash scripts/services.sh up-secure

services-down:
	bash scripts/services.sh down

services-status:
	bash scripts/services.sh status

services-clean:
	bash scripts/services.sh clean

schemas: venv
	$(BIN)/tether schemas export

docs: venv
	$(BIN)/tether settings doc

# Starts its own workers on fresh topics; results in benchmarks/out/ (see docs/benchmarks.md).
ARGS ?=
bench: venv services
	$(SERVICES_ENV) $(BIN)/python benchmarks/harness.py $(ARGS)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path './.services/*' -exec rm -rf {} +
	rm -rf src/*.egg-info

otel-collector-e2e: venv services
	TETHER_OTELCOL="$$(bash scripts/otel-collector.sh | tail -n 1)" $(SERVICES_ENV) \
		$(BIN)/pytest tests/integration/test_otel_collector_e2e.py $(PYTEST_ARGS)

# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Debian packages the tests drive for real (promtool, a loopback registry,
# docker-compose v1 to validate docker-compose.yml, wrk for tests/faults' load).
SYSTEM_PACKAGES := prometheus prometheus-alertmanager docker-registry docker-compose wrk

.PHONY: help venv system-deps engine engine-stop lint test test-unit run bench fleet clean image test-image soak

help:
	@echo "make run         run the exporter against the local engine (starts the bundled one if none answers);"
	@echo "                 flags go in ARGS: make run ARGS=\"--web.listen-address=127.0.0.1:9733\""
	@echo "make test        install everything, start the engine, build the image, lint, type-check and run every test"
	@echo "make test-unit   every test that needs nothing real (no engine, promtool, Prometheus, registry,"
	@echo "                 image, docker-compose, wrk): the ones not marked $(REAL_MARKERS)"
	@echo "make bench       benchmarks against docker stats and the simulated engine"
	@echo "make fleet       the fleet benchmark: 50 simulated hosts x 100 containers + the real engine (FLEET_ARGS=...)"
	@echo "make soak        tests/faults at soak size (SOAK=1: minutes, not seconds; about 12 min)"
	@echo "make engine      install and start the bundled Docker engine"
	@echo "make engine-stop stop the engine this project started"
	@echo "make image       build the container image $(IMAGE) (and $(TEST_IMAGE)) offline (Debian base via mmdebstrap)"
	@echo "make test-image  build the image and test it on the engine (tests marked image)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(STAMP)

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		[ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; rm_policy=1; }; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1 \
		  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }; }; \
		[ -z "$${rm_policy:-}" ] || rm -f /usr/sbin/policy-rc.d; \
	fi

engine:
	scripts/docker-engine.sh start

engine-stop:
	scripts/docker-engine.sh stop

lint: $(STAMP)
	$(VENV)/bin/ruff check exporter tests bench
	$(VENV)/bin/ruff format --check exporter tests bench
	$(VENV)/bin/mypy

test: $(STAMP) system-deps engine lint image
	$(PY) -m pytest

# Every test that needs nothing real, whatever its folder: the markers say what a test needs
# (pyproject.toml lists them), and require() fails a test that needs something unmarked.
REAL_MARKERS := engine or registry or image or promtool or prometheus or compose or tools
test-unit: $(STAMP)
	$(PY) -m pytest -m "not ($(REAL_MARKERS))"

# The fault suite scaled up: longer outages, churn and floods (figures in artifacts/faults/).
soak: $(STAMP) system-deps engine
	SOAK=1 $(PY) -m pytest -m faults tests/faults

# Flags pass through ARGS: make run ARGS="--web.listen-address=127.0.0.1:9733 --log.level=debug".
ARGS ?=
run: $(STAMP) engine
	$(VENV)/bin/sysinner-exporter serve $(ARGS)

bench: $(STAMP) engine
	$(PY) -m bench

# One exporter per host over a SIMULATED fleet plus the real engine, Prometheus, a
# 2-peer Alertmanager cluster; pull mode then push mode (README "Running a fleet").
FLEET_ARGS ?= --hosts 50 --containers 100 --poll-interval 10 --scrape-interval 10 --pull-interval 10 --timeout 300 --cpu-window 60
fleet: $(STAMP) system-deps engine
	$(PY) -m bench.fleet $(FLEET_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# The container image, built with no registry: a Debian base made by
# mmdebstrap (cached), wheels fetched on the host (the build itself runs with
# --network=none), then the Dockerfile. Only this build's dangling leftovers
# are pruned afterwards; the base and $(IMAGE) stay. The README, the
# Dockerfile and docker-compose.yml all name $(IMAGE); the tests use the
# same build under $(TEST_IMAGE).
IMAGE ?= sysinner-exporter:latest
TEST_IMAGE ?= sysinner-exporter:test
IMAGE_BASE ?= local/python-base:bookworm
WHEELHOUSE ?= .cache/wheelhouse
IMAGE_LOCK ?= /tmp/sysinner-exporter-image.lock
VERSION = $(shell $(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')

image: $(STAMP) engine
	scripts/build-base-image.sh $(IMAGE_BASE)
	scripts/build-wheelhouse.sh $(IMAGE_BASE) $(WHEELHOUSE)
	@# One build at a time on this engine: a prune of leftovers would delete the
	@# untagged layers of a build still running from another checkout.
	flock $(IMAGE_LOCK) sh -c '\
		docker build --network=none --force-rm \
		  --build-arg BASE_IMAGE=$(IMAGE_BASE) --build-arg WHEELHOUSE=$(WHEELHOUSE) \
		  --build-arg VERSION=$(VERSION) -t $(IMAGE) -t $(TEST_IMAGE) . \
		&& docker image prune --force --filter label=io.sysinner.exporter.stage=build >/dev/null \
		&& docker image prune --force --filter label=org.opencontainers.image.title=sysinner-exporter >/dev/null'

test-image: image
	SYSINNER_TEST_IMAGE=$(TEST_IMAGE) $(PY) -m pytest -m image tests/image

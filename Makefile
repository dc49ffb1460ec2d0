# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Debian packages the tests drive for real (promtool, a loopback registry).
SYSTEM_PACKAGES := prometheus prometheus-alertmanager docker-registry

.PHONY: help venv system-deps engine engine-stop lint test test-unit run bench clean

help:
	@echo "make run         run the exporter against the local engine (starts the bundled one if none answers)"
	@echo "make test        install everything, start the engine, lint, type-check and run every test"
	@echo "make test-unit   the tests that need neither engine nor promtool"
	@echo "make bench       benchmarks against docker stats and the simulated engine"
	@echo "make engine      install and start the bundled Docker engine"
	@echo "make engine-stop stop the engine this project started"

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

test: $(STAMP) system-deps engine lint
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

run: $(STAMP) engine
	$(VENV)/bin/sysinner-exporter serve

bench: $(STAMP) engine
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Kommunal-Pulse: `make run` starts everything with demo traffic, `make test` runs every test tier.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup system run test test-unit lint bench soak screenshots clean

setup: system $(VENV)/.installed .venv-ckan/.installed

system:
	@bash scripts/setup-system.sh

$(VENV)/.installed: pyproject.toml $(wildcard package.json package-lock.json)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --silent; \
	elif [ -f package.json ]; then npm install --no-audit --no-fund --silent; fi
	@touch $@

# CKAN and ckanext-dcat for the DCAT harvest test, in a venv of their own (CKAN pins older releases of shared deps)
.venv-ckan/.installed: tests/harvester/requirements.txt
	$(PYTHON) -m venv .venv-ckan
	.venv-ckan/bin/pip install -q --upgrade pip
	.venv-ckan/bin/pip install -q -r tests/harvester/requirements.txt
	@touch $@

run: setup
	$(BIN)/kp stack up

test: setup
	$(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/pytest -q tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/vulture

bench: setup
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

soak: setup
	$(BIN)/python -m bench.soak --minutes $(or $(MINUTES),10)

# README screenshots of dashboard and portal, from a running stack (`kp stack up --detach`)
screenshots: setup
	$(BIN)/python scripts/screenshots.py

clean:
	-$(BIN)/kp stack down --purge
	rm -rf .run .venv-ckan

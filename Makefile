# Backroom: `make run` brings the whole system up; `make test` runs every test on real infrastructure.
SHELL := /bin/bash
CACHE ?= $(HOME)/.cache/backroom
UV_VERSION := 0.13.9
UV := $(CACHE)/uv-tool/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PYTHON ?= python3.11
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
# Every target here runs the system on this machine: development mode (a random signing secret
# per checkout in .run/dev-jwt-secret, HS256 tokens from `backroom token`). Production sets
# BACKROOM_ENV to anything else and configures real keys (see README, Authentication).
export BACKROOM_ENV ?= dev

.PHONY: help install run test test-unit lint format infra-up infra-down status migrate clean bench faults

help:
	@echo "make run    - everything up (Kafka, PostgreSQL, SMTP sink, six services, nginx), demo data, URLs; Ctrl-C stops all"
	@echo "make test   - install, start what is missing, run unit + integration + e2e tests, stop what it started"
	@echo "make lint   - ruff (lint + format check), shellcheck, import contracts, promtool (alert rules and their tests), mypy --strict; make test runs it first"
	@echo "make bench  - checkout throughput/latency vs offered rate -> bench/results/<date>.json + .png"
	@echo "make faults - crash scenarios under load, invariants checked -> bench/results/faults-<date>.json"
	@echo "make status / infra-up / infra-down / migrate"

$(UV):
	python3 -m venv $(CACHE)/uv-tool
	$(CACHE)/uv-tool/bin/pip install -q uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen
	@touch $@

install: $(VENV)/.synced

run: install
	bash deploy/local/run.sh

# Lint first: a style or type error fails in seconds, before any infrastructure starts.
test: install lint
	bash deploy/local/test.sh

bench: install
	$(PY) -m bench.bench

faults: install
	$(PY) -m bench.faults

test-unit: install
	$(PY) -m pytest tests/unit -q

# Cheapest checks first. shellcheck comes from apt (installed here on a fresh machine); -x -P
# SCRIPTDIR follows each script's `. lib.sh` so variables lib.sh reads count as used.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@SAY_PREFIX=lint bash -c '. deploy/local/lib.sh && ensure_apt_pkg shellcheck shellcheck'
	shellcheck -x -P SCRIPTDIR deploy/local/*.sh deploy/compose/*.sh $(wildcard .ci/run)
	$(VENV)/bin/lint-imports
	@SAY_PREFIX=lint bash -c '. deploy/local/lib.sh && ensure_apt_pkg promtool prometheus'
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.yml
	$(VENV)/bin/mypy libs services bench tests

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

infra-up: install
	bash deploy/local/infra.sh up

infra-down:
	bash deploy/local/prometheus.sh down || true
	bash deploy/local/services.sh down || true
	bash deploy/local/nginx.sh down || true
	bash deploy/local/infra.sh down

status:
	@bash deploy/local/infra.sh status; bash deploy/local/services.sh status; bash deploy/local/nginx.sh status; bash deploy/local/prometheus.sh status || true

migrate: install
	$(VENV)/bin/backroom topics
	$(VENV)/bin/backroom migrate

clean: infra-down
	rm -rf .run

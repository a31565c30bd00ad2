# sluice — the README's commands. `make run` and `make test` are all a new user needs; each
# installs what it needs first (venv, pinned Python and npm packages, redis-server).
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help setup run test pr lint typecheck complexity unit integration pytest synth nag cfn-lint deploy diff bench clean

VENV ?= .venv
PY := $(VENV)/bin/python
CDK := npx --no-install cdk
ENV ?= dev
ARGS ?=
PYTEST_ARGS ?=

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONDONTWRITEBYTECODE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

help:
	@echo "make run                 run sluice locally (real redis-server + moto server); ARGS='--help' for options"
	@echo "make test                everything CI runs: ruff, mypy, complexity, pytest, synth of every env, cdk-nag, cfn-lint"
	@echo "make synth               synthesize every environment into cdk.out/"
	@echo "make deploy ENV=<name>   deploy one environment (needs AWS credentials)"
	@echo "make diff ENV=<name>     show what a deploy would change"
	@echo "make bench [ARGS=--quick] benchmarks into build/bench/"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip==25.3
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	@touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "node and npm are required for the CDK CLI" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(VENV)/.installed node_modules/.installed
	@scripts/ensure-redis.sh

run: setup
	$(PY) -m local $(ARGS)

test: setup lint typecheck complexity pytest synth cfn-lint

pr: test

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

complexity: setup
	$(VENV)/bin/xenon --max-absolute C --max-modules B --max-average A runtime stacks local bench

unit: setup
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

pytest: setup
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

# Synthesizes every environment's stage; cdk-nag runs inside synth as a validation plugin and
# fails it on any unacknowledged finding.
synth: setup
	rm -rf cdk.out
	$(CDK) synth --quiet

nag: synth

cfn-lint: setup
	@test -d cdk.out || $(MAKE) synth
	$(VENV)/bin/cfn-lint --non-zero-exit-code error -- cdk.out/assembly-*/*.template.json

deploy: setup
	$(CDK) deploy --all -c env=$(ENV)

diff: setup
	$(CDK) diff --all -c env=$(ENV)

bench: setup
	$(PY) -m bench $(ARGS)

clean:
	rm -rf cdk.out build .pytest_cache .mypy_cache .ruff_cache

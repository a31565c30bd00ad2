# sluice — the README's commands. `make run` and `make test` are all a new user needs; each
# installs what it needs first (venv, pinned Python and npm packages, redis-server).
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help setup run test test-stages pr lint typecheck complexity unit integration pytest synth synth-check nag cfn-lint checkov lock \
	deploy diff destroy credentials rehearse bench clean

VENV ?= .venv
PY := $(VENV)/bin/python
CDK := npx --no-install cdk
ENV ?= dev
ARGS ?=
# Every stack sits in a Stage (`sluice-<env>/stateful`, `sluice-<env>/stateless`): the CLI selects
# them by this pattern (`--all` selects nothing in a stage-only app).
STACKS = 'sluice-$(ENV)/*'
# The synth check runs as a deploy does: with a concrete account and region, so tokens render as
# literals and every cdk-nag acknowledgment is matched against what a deploy validates. The
# account is a placeholder (no credentials are used); the deploy rehearsal covers a second region.
CHECK_ACCOUNT ?= 123456789012
CHECK_REGION ?= us-east-1
# ... and with every optional system on (the relay is off by default: it needs an API URL).
ALL_SYSTEMS := {"relay": {"enabled": true, "api_url": "https://api.example.com/v1/records"}, "gateway": {"enabled": true}, "jobs": {"enabled": true}}
PYTEST_ARGS ?=
# The CPython versions `functions.python_version` allows (stacks/config.py): one layer lock each.
LAMBDA_PYTHONS := 3.12 3.13
# checkov pins its own boto3/botocore/packaging, older than requirements.txt's: it lives in its own
# venv, installed from a hashed lock for this machine's Python (`make lock` writes both kinds).
CHECKOV_VENV ?= .venv-checkov

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONDONTWRITEBYTECODE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

help:
	@echo "make run                 run sluice locally (real redis-server + moto server); ARGS='--help' for options"
	@echo "make test                everything CI runs: ruff, mypy, complexity, pytest, synth of every env, cdk-nag,"
	@echo "                         cfn-lint, checkov and the deploy rehearsal (make rehearse: the CDK CLI deploys every env to moto)"
	@echo "make synth               synthesize every environment into cdk.out/"
	@echo "make deploy ENV=<name>   deploy one environment (needs AWS credentials); ARGS='--require-approval never'"
	@echo "make diff ENV=<name>     show what a deploy would change"
	@echo "make destroy ENV=<name>  delete one environment's stacks (prod also needs CONFIRM=prod)"
	@echo "make bench [ARGS=--quick] benchmarks into build/bench/"
	@echo "make lock [ARGS=--upgrade] re-resolve the Lambda layer's locks (and checkov's) after editing requirements"

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip==25.3
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .   # the `sluice` console script
	@touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "node and npm are required for the CDK CLI" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.lock
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --require-hashes --no-deps -r requirements-checkov.lock
	@touch $@

setup: $(VENV)/.installed node_modules/.installed
	@scripts/ensure-redis.sh

run: setup
	$(PY) -m local $(ARGS)

# The rehearsal's synth (every environment, every optional system, account 123456789012 in
# eu-west-1, cdk-nag inside) is the one whose templates cfn-lint and checkov read; the template
# tests synthesize every environment in us-east-1 and eu-west-1 with cdk-nag as well.
# Two stages at a time (this project's machines have 2 cores): pytest (on its workers) beside the
# rehearsal, then cfn-lint and checkov on the rehearsal's templates, then the static checks, so
# the longest stage starts first; each stage's output is printed whole when it ends and any
# failure fails `make test`. TEST_JOBS=1 runs them one after another.
TEST_JOBS ?= 2
test:
	@began=$$(date +%s); \
	$(MAKE) --no-print-directory setup $(CHECKOV_VENV)/.installed || exit; \
	checks=$$(date +%s); \
	$(MAKE) --no-print-directory --keep-going -j $(TEST_JOBS) --output-sync=target test-stages \
		ASSEMBLY=build/rehearsal/cdk.out TEMPLATES_FROM=rehearse; status=$$?; \
	ended=$$(date +%s); \
	echo "make test: set-up $$((checks - began)) s, checks $$((ended - checks)) s, exit status $$status"; \
	exit $$status

test-stages: pytest rehearse cfn-lint checkov typecheck lint complexity

pr: test

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

complexity: setup
	$(VENV)/bin/xenon --max-absolute C --max-modules B --max-average A runtime stacks local bench ops

unit: setup
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

# Three workers on this project's 2-core machines: the end-to-end tests spend much of their time
# waiting on SQS's real-time visibility timeouts and delays, and a third worker fills those waits
# (`make test` on a fresh clone: checks 334 s with two workers, 303 s with three). A file's tests
# stay on one worker, so module fixtures (a synthesized stage, a server, a shared run) are built once.
# PYTEST_DIST=worksteal spreads a long file's tests over the workers (its module fixtures are then
# built on each worker that runs some of them).
PYTEST_WORKERS ?= 3
PYTEST_DIST ?= loadfile
pytest: setup
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist $(PYTEST_DIST) tests $(PYTEST_ARGS)

# Synthesizes every environment's stage with the CLI's account and region (your profile's);
# cdk-nag runs inside synth as a validation plugin and fails it on any unacknowledged finding.
synth: setup
	rm -rf cdk.out
	$(CDK) synth --quiet 'sluice-*/*' $(ARGS)

# Every environment, every optional system, a concrete account and region, and a non-zero exit on
# any validation finding (the CLI prints the report and exits 1). `make test` gets the same from
# the deploy rehearsal's synth (eu-west-1) and the template tests (us-east-1 and eu-west-1).
synth-check: setup
	rm -rf cdk.out
	CDK_DEFAULT_ACCOUNT=$(CHECK_ACCOUNT) CDK_DEFAULT_REGION=$(CHECK_REGION) AWS_REGION=$(CHECK_REGION) \
		$(CDK) synth --quiet 'sluice-*/*' -c overrides='$(ALL_SYSTEMS)'

nag: synth-check

# The templates cfn-lint and checkov read: `make synth-check`'s, unless ASSEMBLY names another
# (then TEMPLATES_FROM names the target that writes them).
ASSEMBLY ?= cdk.out
TEMPLATES_FROM ?=
cfn-lint checkov: $(TEMPLATES_FROM)

cfn-lint: setup
	@test -d $(ASSEMBLY) || $(MAKE) synth-check
	$(VENV)/bin/cfn-lint --non-zero-exit-code error -- $(ASSEMBLY)/assembly-*/*.template.json

# checkov over the same templates; every skipped check and its reason is in .checkov.yaml.
checkov: setup $(CHECKOV_VENV)/.installed
	@test -d $(ASSEMBLY) || $(MAKE) synth-check
	$(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml --skip-download --quiet --compact \
		--framework cloudformation $$(printf -- '-f %s ' $(ASSEMBLY)/assembly-*/*.template.json)

# The locks: what ships to Lambda, resolved for the Lambda platform (not this machine) for every
# allowed CPython, each distribution pinned and hashed; and checkov's own venv for this machine.
# uv keeps existing pins it can; ARGS=--upgrade re-resolves everything to the newest allowed.
lock: setup
	for version in $(LAMBDA_PYTHONS); do \
		$(VENV)/bin/uv pip compile --quiet requirements.txt --python-platform aarch64-manylinux2014 \
			--python-version $$version --generate-hashes --custom-compile-command 'make lock' \
			-o requirements-lambda-$$version.lock $(ARGS) || exit 1; \
	done
	$(VENV)/bin/uv pip compile --quiet requirements-checkov.in --python-version 3.11 --universal \
		--generate-hashes --custom-compile-command 'make lock' -o requirements-checkov.lock $(ARGS)

credentials: setup
	@$(PY) scripts/check_aws_credentials.py "make $(firstword $(MAKECMDGOALS))"

deploy: credentials
	$(CDK) deploy $(STACKS) -c env=$(ENV) $(ARGS)

diff: credentials
	$(CDK) diff $(STACKS) -c env=$(ENV) $(ARGS)

# prod is asked twice: CONFIRM=prod here, then the CLI's own prompt (unless ARGS has --force).
destroy: credentials
	@if [ "$(ENV)" = "prod" ] && [ "$(CONFIRM)" != "prod" ]; then \
		echo "make destroy: refusing to destroy prod; run 'make destroy ENV=prod CONFIRM=prod'" >&2; exit 1; fi
	$(CDK) destroy $(STACKS) -c env=$(ENV) $(ARGS)

# The deploy rehearsal: the real CDK CLI bootstraps and runs `make deploy ENV=<env>` for every
# environment against a moto server (see README, "Testing the deploy").
# MAKEFLAGS is cleared: the rehearsal's own `make deploy` runs are not jobs of `make test`'s -j.
rehearse: setup
	MAKEFLAGS= $(PY) -m tests.deploy.rehearsal

bench: setup
	$(PY) -m bench $(ARGS)

clean:
	rm -rf cdk.out build .pytest_cache .mypy_cache .ruff_cache $(CHECKOV_VENV)

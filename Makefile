# EnvCat: `make up` runs the whole system here, `make test` runs every check.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup setup-dev up test lint typecheck docs clean

setup:
	VENV=$(VENV) ./scripts/bootstrap.sh

setup-dev:
	VENV=$(VENV) WITH_TEST_DEPS=1 ./scripts/bootstrap.sh

up: setup
	$(BIN)/envcat server up

lint: setup-dev
	$(BIN)/ruff check envcat tests bench
	$(BIN)/ruff format --check envcat tests bench

typecheck: setup-dev
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site

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
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/python -m pytest

# The documentation site on http://127.0.0.1:8889, rebuilt on every change (docs/ and envcat/).
docs: setup-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8889

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site

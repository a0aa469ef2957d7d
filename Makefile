# EnvCat: the same two commands as scripts/up and scripts/test, for those who prefer make.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup setup-dev up test docs bench clean

setup:
	VENV=$(VENV) ./scripts/bootstrap.sh

setup-dev:
	VENV=$(VENV) WITH_TEST_DEPS=1 ./scripts/bootstrap.sh

up:
	VENV=$(VENV) ./scripts/up

test:
	VENV=$(VENV) ./scripts/test

# The documentation site on http://127.0.0.1:8889, rebuilt on every change (docs/ and envcat/).
docs: setup-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8889

# The speed benches of issue #14 in a quick mode, one table (docs/performance.md).
bench:
	$(BIN)/python bench/all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site

# The README's commands. Every target bootstraps its own virtualenv from nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test lint types layers unit crd fmt bench demo clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,sim,operator,demo]'
	touch $(STAMP)

## test: lint, types, layering and the whole pytest suite (what CI runs)
test: lint types layers unit

## system-deps: the real Prometheus server the integration tests run (Debian package)
system-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; }

lint: $(STAMP)
	$(BIN)/ruff check chiron_operator tests
	$(BIN)/ruff format --check chiron_operator tests

types: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP) system-deps
	$(BIN)/pytest -q

## crd: regenerate crds/ from the pydantic models (the single source)
crd: $(STAMP)
	$(BIN)/chiron-crd --out crds/chiron.io_llmservingpools.yaml

## fmt: apply the formatter and the safe lint fixes
fmt: $(STAMP)
	$(BIN)/ruff format chiron_operator tests
	$(BIN)/ruff check --fix chiron_operator tests

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache

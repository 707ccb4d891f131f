# The one entry point for developers and CI. Everything runs from .venv at the repo root.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint run demo bench tool-eval up grafana-password clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

run: install
	$(BIN)/python -m deploy.run

demo: install
	$(BIN)/python -m deploy.run --demo

bench: install
	$(BIN)/python -m tests.bench

# The tool-call corpus score per format (tests/tool_corpus/corpus.yaml); fails when a row fails.
tool-eval: install
	$(BIN)/python -m tests.tool_corpus

up:
	docker compose up --build

grafana-password:
	docker compose run --rm --no-deps --entrypoint cat grafana_password /secrets/grafana_admin_password; echo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

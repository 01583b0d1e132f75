# dlfd: the two commands of the README are `make demo` and `make test`.
# Each creates/refreshes the virtualenv in .venv from the pinned lock file, then runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dlfd-installed
DEMO_DIR ?= runs/demo

.PHONY: demo test test-slow lint venv clean contact-sheet

$(STAMP): requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks

test: lint
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

demo: $(STAMP)
	DEMO_DIR=$(DEMO_DIR) PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

contact-sheet: $(STAMP)
	$(BIN)/python scripts/render_contact_sheet.py --out docs/orl-glasses-contact-sheet.png

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

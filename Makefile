# dlfd: the two commands of the README are `make demo` and `make test`.
# Each creates/refreshes the virtualenv in .venv from the pinned lock file, then runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dlfd-installed
DEMO_DIR ?= runs/demo
SERVICE_DIR ?= runs/service

.PHONY: demo service-demo test test-slow gpu-check lint venv clean contact-sheet

$(STAMP): requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the pinned environment into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install -r requirements-dev.lock > $(VENV)/install.log 2>&1 \
	  || { cat $(VENV)/install.log; exit 1; }
	@$(BIN)/python -m pip install --no-deps --no-build-isolation -e . >> $(VENV)/install.log 2>&1 \
	  || { cat $(VENV)/install.log; exit 1; }
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks

test: lint
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

gpu-check: $(STAMP)
	PYTHON=$(abspath $(BIN))/python bash benchmarks/gpu_check.sh

demo: $(STAMP)
	DEMO_DIR=$(DEMO_DIR) PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

service-demo: $(STAMP)
	SERVICE_DIR=$(SERVICE_DIR) PATH="$(abspath $(BIN)):$$PATH" bash scripts/service_demo.sh

contact-sheet: $(STAMP)
	$(BIN)/python scripts/render_contact_sheet.py --out docs/orl-glasses-contact-sheet.png

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# Quick start: `make demo` counts sample_logs/ with a master and two workers; `make test` runs
# the whole suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STATE := .logdispatch-demo

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# An editable install writes no bytecode; with PYTHONDONTWRITEBYTECODE set, nothing would.
	$(BIN)/python -m compileall -q dispatcher workers
	touch $@

demo: $(VENV)/.installed
	rm -rf $(DEMO_STATE)
	$(BIN)/logdispatch run sample_logs --once --workers 2 --state $(DEMO_STATE)

lint: $(VENV)/.installed
	$(BIN)/ruff check dispatcher workers tests scripts benchmarks
	$(BIN)/mypy dispatcher workers benchmarks
	$(BIN)/lint-imports

# pytest exits 5 when it collected nothing: that is a failure here, said out loud.
test: lint
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$rc

clean:
	rm -rf $(VENV) .venv-3.* $(DEMO_STATE) .logdispatch .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

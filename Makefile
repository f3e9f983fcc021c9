# `make demo` and `make test` each set everything up on a fresh machine first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo serve test lint bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: its CPU wheel is local, an unpinned one would pull CUDA packages.
	$(PY) -m pip install -q torch==2.13.0
	# llama-cpp-python compiles llama.cpp for this machine's CPU (4.5 min on 2 cores, measured; pip caches the wheel).
	CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_UI=OFF" $(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/hubserve serve --demo

serve: install
	$(VENV)/bin/hubserve serve

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy src
	$(PY) -m pytest

bench: install
	$(PY) -m benchmarks.run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy src

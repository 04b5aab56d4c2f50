# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv with plain pip and installs gankd (editable) with what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench plot

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench,data,export]'
	touch $@

# Main job: the softmax-KL benchmark on this machine (reference providers on a CPU, all providers on a GPU).
demo: $(VENV)/.installed
	$(PY) benchmarks/bench_softmax_kl.py --shapes 256x1000,1024x8192 --out runs/demo/kernels.csv
	$(PY) benchmarks/plot.py --kernels-csv runs/demo/kernels.csv

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

# Full kernel benchmark into the committed results, and its plots.
bench: $(VENV)/.installed
	$(PY) benchmarks/bench_softmax_kl.py
	$(PY) benchmarks/bench_feature_match.py
	$(PY) benchmarks/bench_adapted_feature_match.py
	$(PY) benchmarks/plot.py

plot: $(VENV)/.installed
	$(PY) benchmarks/plot.py

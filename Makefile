# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv with plain pip and installs gankd (editable) with what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench plot device-check ingest

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench,data,export]'
	touch $@

# Main job: distil a digits generator end to end on this machine (teacher cached after the first run).
demo: $(VENV)/.installed
	$(PY) -m gankd.cli demo

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

# Full kernel benchmark into the committed results, and its plots.
bench: $(VENV)/.installed
	$(PY) -m benchmarks.bench_softmax_kl
	$(PY) -m benchmarks.bench_feature_match
	$(PY) -m benchmarks.bench_adapted_feature_match
	$(PY) -m benchmarks.bench_train_step
	$(PY) -m benchmarks.plot

plot: $(VENV)/.installed
	$(PY) -m benchmarks.plot

# The one-shot GPU run (on the GPU machine): make device-check OUT=folder [WHEELS=folder of wheels].
device-check:
	benchmarks/device_check.sh $(OUT) $(WHEELS)

# Its local half: the rows into benchmarks/results/, figures and README tables: make ingest OUT=folder.
ingest: $(VENV)/.installed
	$(PY) -m benchmarks.ingest_device_results $(OUT)

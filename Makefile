# svdcli developer entry points. `make demo` and `make test` are all a fresh machine needs.
PY      := .venv/bin/python
STAMP   := .venv/.installed
export OMP_NUM_THREADS ?= 2

.PHONY: setup test test-all demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[all,dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ''

demo: setup
	$(PY) -m svdcli.demo.run --workdir demo

bench: setup
	$(PY) -m benchmarks.run

clean:
	rm -rf .venv demo build *.egg-info

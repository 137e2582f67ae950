# svdcli developer entry points. `make demo` and `make test` are all a fresh machine needs.
PY      := .venv/bin/python
STAMP   := .venv/.installed
# Blender's Python module for `svd render` lives in its own environment: the bpy wheel requires
# numpy < 2, the project numpy 2. ~30 s and 0.8 GB to install; svdcli finds it by itself.
RENDER_STAMP := .venv-render/.installed
export OMP_NUM_THREADS ?= 2

.PHONY: setup test test-all test-portable demo bench clean

setup: $(STAMP) $(RENDER_STAMP)

$(STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[all,dev]'
	touch $(STAMP)

$(RENDER_STAMP):
	python3 -m venv .venv-render
	.venv-render/bin/pip install -q bpy==5.0.1
	touch $(RENDER_STAMP)

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ''

# The numeric tests (those comparing computed floats, marked by tests/conftest.py) once per
# setting: other torch kernels (ATen's instruction set), MKL's and oneDNN's instruction sets
# and thread counts, as other machines would run them. ~25 min on 2 cores.
PORTABLE_SETTINGS ?= ATEN_CPU_CAPABILITY=default ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
	MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1 OMP_NUM_THREADS=2
test-portable: setup
	@for setting in $(PORTABLE_SETTINGS); do \
		env $$setting $(PY) -c "import torch; print('== $$setting: torch kernels', torch.backends.cpu.get_cpu_capability())"; \
		env $$setting $(PY) -m pytest -q -m 'numeric and not slow and not gpu' || exit 1; \
	done

demo: setup
	$(PY) -m svdcli.demo.run --workdir demo

bench: setup
	$(PY) -m benchmarks.run

clean:
	rm -rf .venv .venv-render demo build *.egg-info

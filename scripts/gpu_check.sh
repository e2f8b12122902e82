#!/usr/bin/env bash
# The whole GPU check in one call: scripts/gpu_check.sh OUT_DIR
#
# For a bare, offline GPU machine whose Python (${PYTHON:-python3}) has torch >= 2.4: the
# project's other dependencies that are missing are installed from the wheelhouse
# (${WHEELHOUSE:-.whl}, built here by `make wheelhouse`) with pip --no-index into a private
# folder, and the project runs from this source tree. Steps, results and the table go to
# OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md. Without CUDA every step is rehearsed on
# the CPU at tiny sizes. Nothing is downloaded.
set -u
OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WHL=${WHEELHOUSE:-$ROOT/.whl}
SITE=${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/omama_gpu_check_site}
mkdir -p "$OUT" "$SITE"
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
missing=()
for pair in pycocotools:pycocotools h5py:h5py timm:timm tqdm:tqdm yaml:pyyaml \
    matplotlib:matplotlib huggingface_hub:huggingface_hub safetensors:safetensors \
    numpy:numpy scipy:scipy cv2:opencv_python_headless; do
  mod=${pair%%:*} whl=${pair##*:}
  "$PY" -c "import $mod" 2>/dev/null && continue
  files=("$WHL"/"$whl"-*.whl)
  if [ -e "${files[0]}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "${files[@]}" || missing+=("$mod")
  else
    missing+=("$mod")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu_check: missing and not in $WHL: ${missing[*]}" >&2
fi
exec "$PY" "$ROOT/scripts/gpu_check.py" "$OUT" --missing "${missing[*]:-}"

#!/usr/bin/env bash
# The paper profile's contracting vs expanding at paper scale on a GPU machine that has JAX (or
# PyTorch) but no TensorFlow and cannot download: Keras runs on JAX there (Keras' own trainer,
# array batches from runtime.make_dataset), from wheels carried beside the working tree.
#
#   bash benchmarks/device_paper.sh MAX_MINUTES PRETRAIN_EPOCHS [PLANS] [EXTRA run_all ARGS...]
#
# State (dataset cache, pretrained model, finished runs) lives in $UNET_FT_STATE
# (/root/paper_gpu): it survives between calls only while the machine stays warm, so call
# again at once to continue (run_all skips what is done; exit code 4 = stopped by
# --max-minutes). What comes back in $OUT: gpu.txt, log.txt, paper_scale.md (the numbers for
# BENCHMARKS.md), results.csv / REPORT.md once the grid is complete. Wheels that the machine
# lacks (keras, namex, optree, imagehash, PyWavelets) travel in .whl (BENCHMARKS.md).
set -uo pipefail
M=${1:-9}; E=${2:-4}; PLANS=${3:-contracting,expanding}
shift $(( $# < 3 ? $# : 3 ))
STATE=${UNET_FT_STATE:-/root/paper_gpu}
OUT=${OUT:-$STATE/out}
mkdir -p "$OUT" "$STATE"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export KERAS_BACKEND=${KERAS_BACKEND:-jax} XLA_PYTHON_CLIENT_PREALLOCATE=false
export UNET_FT_CACHE=$STATE/cache UNET_FT_NO_PROGRESS=1 PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi") \
  | tee "$OUT/gpu.txt"
python3 experiments/run_all.py --profile paper --plans "$PLANS" --set study.seeds=1 \
  --set pretrain.epochs="$E" --max-minutes "$M" --out "$STATE/results" --jobs 1 "$@" 2>&1 \
  | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
python3 benchmarks/paper_scale.py "$STATE/results" 2>&1 | tee "$OUT/paper_scale.md"
cp "$STATE/results/results.csv" "$STATE/results/REPORT.md" "$OUT"/ 2>/dev/null
echo "run_all exit code $rc (0 = all done, 4 = stopped by --max-minutes: call again to continue)"
exit "$rc"

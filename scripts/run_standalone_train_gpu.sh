#!/usr/bin/env bash
# One-device training on GPU. Extra arguments go to train.py.
USAGE="usage: bash scripts/run_standalone_train_gpu.sh DATA_DIR [train.py options]
  CUDA_VISIBLE_DEVICES / DEVICE_ID (env, default 0) pick the GPU; the log goes to ./train/log.txt"
source "$(dirname "$0")/common.sh"
[ $# -ge 1 ] || die "missing DATA_DIR"
DATA_DIR=$(abspath "$1"); shift
require_dir "$DATA_DIR" "DATA_DIR"
rm -rf train && mkdir train && cd train || exit 1
echo "training on GPU ${DEVICE_ID:-0}; log: $PWD/log.txt"
"$PYTHON" "$ROOT/train.py" --data_dir "$DATA_DIR" --device_target GPU --device_id "${DEVICE_ID:-0}" \
  --is_distributed 0 "$@" > log.txt 2>&1

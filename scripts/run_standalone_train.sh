#!/usr/bin/env bash
# One-device training on Ascend. Extra arguments go to train.py.
USAGE="usage: bash scripts/run_standalone_train.sh DATA_DIR [train.py options]
  e.g. bash scripts/run_standalone_train.sh /data/coco2017 --config_path configs/yolov3_tiny.yaml
  DEVICE_ID (env, default 0) picks the Ascend device; the log goes to ./train/log.txt"
source "$(dirname "$0")/common.sh"
[ $# -ge 1 ] || die "missing DATA_DIR"
DATA_DIR=$(abspath "$1"); shift
require_dir "$DATA_DIR" "DATA_DIR"
rm -rf train && mkdir train && cd train || exit 1
echo "training on Ascend device ${DEVICE_ID:-0}; log: $PWD/log.txt"
"$PYTHON" "$ROOT/train.py" --data_dir "$DATA_DIR" --device_target Ascend --device_id "${DEVICE_ID:-0}" \
  --is_distributed 0 "$@" > log.txt 2>&1

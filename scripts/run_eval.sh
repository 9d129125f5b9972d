#!/usr/bin/env bash
# COCO evaluation on Ascend. Extra arguments go to eval.py; the log goes to ./eval/log.txt
USAGE="usage: bash scripts/run_eval.sh DATA_DIR CKPT [eval.py options]
  DEVICE_ID (env, default 0) picks the device"
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || die "missing DATA_DIR or CKPT"
DATA_DIR=$(abspath "$1"); CKPT=$(abspath "$2"); shift 2
require_dir "$DATA_DIR" "DATA_DIR"
require_file "$CKPT" "CKPT"
rm -rf eval && mkdir eval && cd eval || exit 1
echo "evaluating on Ascend device ${DEVICE_ID:-0}; log: $PWD/log.txt"
"$PYTHON" "$ROOT/eval.py" --data_dir "$DATA_DIR" --pretrained "$CKPT" --device_target Ascend \
  --device_id "${DEVICE_ID:-0}" --eval_dir "$PWD" "$@" > log.txt 2>&1

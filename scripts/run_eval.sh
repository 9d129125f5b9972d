#!/usr/bin/env bash
# COCO evaluation on Ascend. Extra arguments go to eval.py; results and log in ./eval/
USAGE="usage: bash scripts/run_eval.sh DATA_DIR CKPT [eval.py options]
  DEVICE_ID (env, default 0) picks the device"
source "$(dirname "$0")/common.sh"
eval_on Ascend "$@"

#!/usr/bin/env bash
# One-device training on Ascend. Extra arguments go to train.py.
USAGE="usage: bash scripts/run_standalone_train.sh DATA_DIR [train.py options]
  e.g. bash scripts/run_standalone_train.sh /data/coco2017 --config_path configs/yolov3_tiny.yaml
  DEVICE_ID (env, default 0) picks the Ascend device; work dir, outputs and log in ./train/
  (kept: launch again with --resume True to continue that run)"
source "$(dirname "$0")/common.sh"
standalone_train Ascend "$@"

#!/usr/bin/env bash
# One-device training on GPU. Extra arguments go to train.py.
USAGE="usage: bash scripts/run_standalone_train_gpu.sh DATA_DIR [train.py options]
  CUDA_VISIBLE_DEVICES / DEVICE_ID (env, default 0) pick the GPU; work dir, outputs and log in ./train/
  (kept: launch again with --resume True to continue that run)"
source "$(dirname "$0")/common.sh"
standalone_train GPU "$@"

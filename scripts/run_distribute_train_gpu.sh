#!/usr/bin/env bash
# Data-parallel training on DEVICE_NUM GPUs through msrun. Logs: ./train_parallel/worker_RANK.log
USAGE="usage: bash scripts/run_distribute_train_gpu.sh DATA_DIR DEVICE_NUM [train.py options]
  run folder ./train_parallel/ (logs, outputs/), kept: launch again with --resume True to continue it"
source "$(dirname "$0")/common.sh"
msrun_train GPU DEVICE_NUM 8118 "$@"

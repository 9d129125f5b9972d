#!/usr/bin/env bash
# Data-parallel training on WORKER_NUM CPU processes through msrun (runs on any machine).
# Logs: ./train_parallel/worker_RANK.log
USAGE="usage: bash scripts/run_distribute_train_cpu.sh DATA_DIR WORKER_NUM [train.py options]
  run folder ./train_parallel/ (logs, outputs/), kept: launch again with --resume True to continue it"
source "$(dirname "$0")/common.sh"
msrun_train CPU WORKER_NUM 8119 "$@"

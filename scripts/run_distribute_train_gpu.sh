#!/usr/bin/env bash
# Data-parallel training on DEVICE_NUM GPUs per node through msrun; several nodes: the same command on each,
# with NODE_NUM, NODE_RANK, MASTER_ADDR (node 0) and MASTER_PORT set.
# Logs: ./train_parallel/worker_RANK.log (several nodes: ./train_parallel/node_R/worker_RANK.log)
USAGE="usage: bash scripts/run_distribute_train_gpu.sh DATA_DIR DEVICE_NUM [train.py options]
  run folder ./train_parallel/ (logs, outputs/), kept: launch again with --resume True to continue it
  DEVICE_NUM: this node's GPUs; several nodes: the same command on each, with NODE_NUM=N (default 1),
  NODE_RANK=0..N-1 (default 0), MASTER_ADDR=node 0's address (default 127.0.0.1), MASTER_PORT (default 8118)"
source "$(dirname "$0")/common.sh"
msrun_train GPU DEVICE_NUM 8118 "$@"

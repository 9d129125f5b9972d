#!/usr/bin/env bash
# Data-parallel training on DEVICE_NUM GPUs per node through msrun; several nodes: the same command on each,
# with NODE_NUM, NODE_RANK, MASTER_ADDR (node 0) and MASTER_PORT set.
# Logs: ./train_parallel/worker_RANK.log (several nodes: ./train_parallel/node_R/worker_RANK.log)
source "$(dirname "$0")/common.sh"
msrun_usage run_distribute_train_gpu.sh DEVICE_NUM GPUs 8118
msrun_train GPU DEVICE_NUM 8118 "$@"

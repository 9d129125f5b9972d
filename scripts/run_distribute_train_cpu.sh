#!/usr/bin/env bash
# Data-parallel training on WORKER_NUM CPU processes per node through msrun (runs on any machine); several
# nodes: the same command on each, with NODE_NUM, NODE_RANK, MASTER_ADDR (node 0) and MASTER_PORT set.
# Logs: ./train_parallel/worker_RANK.log (several nodes: ./train_parallel/node_R/worker_RANK.log)
source "$(dirname "$0")/common.sh"
msrun_usage run_distribute_train_cpu.sh WORKER_NUM workers 8119
msrun_train CPU WORKER_NUM 8119 "$@"

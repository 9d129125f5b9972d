#!/usr/bin/env bash
# Data-parallel training on WORKER_NUM CPU processes through msrun (runs on any machine).
# Logs: ./train_parallel/worker_RANK.log
USAGE="usage: bash scripts/run_distribute_train_cpu.sh DATA_DIR WORKER_NUM [train.py options]"
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || die "missing DATA_DIR or WORKER_NUM"
DATA_DIR=$(abspath "$1"); WORKER_NUM=$2; shift 2
require_dir "$DATA_DIR" "DATA_DIR"
require_count "$WORKER_NUM" "WORKER_NUM"
command -v msrun >/dev/null || die "msrun not on PATH (activate the environment that has mindspore)"
rm -rf train_parallel && mkdir train_parallel || exit 1
echo "training on $WORKER_NUM CPU workers; logs: $PWD/train_parallel/worker_*.log"
msrun --worker_num="$WORKER_NUM" --local_worker_num="$WORKER_NUM" --master_port="${MASTER_PORT:-8119}" \
  --log_dir=train_parallel --join=True \
  "$ROOT/train.py" --data_dir "$DATA_DIR" --device_target CPU --is_distributed 1 "$@"

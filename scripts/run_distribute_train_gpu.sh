#!/usr/bin/env bash
# Data-parallel training on DEVICE_NUM GPUs through msrun. Logs: ./train_parallel/worker_RANK.log
USAGE="usage: bash scripts/run_distribute_train_gpu.sh DATA_DIR DEVICE_NUM [train.py options]"
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || die "missing DATA_DIR or DEVICE_NUM"
DATA_DIR=$(abspath "$1"); DEVICE_NUM=$2; shift 2
require_dir "$DATA_DIR" "DATA_DIR"
require_count "$DEVICE_NUM" "DEVICE_NUM"
command -v msrun >/dev/null || die "msrun not on PATH (activate the environment that has mindspore)"
rm -rf train_parallel && mkdir train_parallel || exit 1
echo "training on $DEVICE_NUM GPUs; logs: $PWD/train_parallel/worker_*.log"
msrun --worker_num="$DEVICE_NUM" --local_worker_num="$DEVICE_NUM" --master_port="${MASTER_PORT:-8118}" \
  --log_dir=train_parallel --join=True \
  "$ROOT/train.py" --data_dir "$DATA_DIR" --device_target GPU --is_distributed 1 "$@"

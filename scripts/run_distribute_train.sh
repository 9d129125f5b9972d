#!/usr/bin/env bash
# Data-parallel training on the Ascend devices of a rank table: one process per device, bound to its
# share of the CPU cores. Run folder ./train_parallel/: logs worker_RANK.log, outputs (unless --ckpt_path)
# in outputs/, shared by the ranks so that --resume True finds rank 0's checkpoints on every rank.
USAGE="usage: bash scripts/run_distribute_train.sh DATA_DIR RANK_TABLE_FILE [train.py options]
  run folder ./train_parallel/ (logs, outputs/), kept: launch again with --resume True to continue it
  RANK_TABLE_FILE: the hccl JSON (server_list[].device[] with device_id, device_ip, rank_id), see README"
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || die "missing DATA_DIR or RANK_TABLE_FILE"
DATA_DIR=$(abspath "$1"); RANK_TABLE_FILE=$(abspath "$2"); shift 2
require_dir "$DATA_DIR" "DATA_DIR"
require_file "$RANK_TABLE_FILE" "RANK_TABLE_FILE"
DEVICE_NUM=$("$PYTHON" -c "import json,sys; t=json.load(open(sys.argv[1])); print(sum(len(s['device']) for s in t['server_list']))" "$RANK_TABLE_FILE" 2>/dev/null) \
  || die "cannot read the device list of $RANK_TABLE_FILE"
require_count "$DEVICE_NUM" "the device count in RANK_TABLE_FILE"
open_run_dir train_parallel "$@"
RUN_DIR=$PWD/train_parallel
export RANK_TABLE_FILE RANK_SIZE=$DEVICE_NUM DEVICE_NUM
CORES=$(nproc)
PER=$(( CORES / DEVICE_NUM > 0 ? CORES / DEVICE_NUM : 1 ))
for ((i = 0; i < DEVICE_NUM; i++)); do
  export DEVICE_ID=$i RANK_ID=$i
  start=$(( i * PER )); end=$(( start + PER - 1 ))
  echo "rank $i on device $i, cores $start-$end; log: $RUN_DIR/worker_$i.log"
  (cd "$RUN_DIR" && taskset -c "$start-$end" "$PYTHON" "$ROOT/train.py" --data_dir "$DATA_DIR" \
     --device_target Ascend --is_distributed 1 --ckpt_path "$RUN_DIR/outputs" "$@" > "worker_$i.log" 2>&1) &
done
wait

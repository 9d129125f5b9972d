#!/usr/bin/env bash
# Data-parallel training on the Ascend devices of a rank table, one or several servers: run the same command on
# every server; each starts only its own devices (the server_list entry whose server_id is one of this host's
# addresses, or SERVER_ID), one process per device with the table's rank_id and device_id, bound to its share of
# the CPU cores. Run folder ./train_parallel/: logs worker_RANK.log, outputs (unless --ckpt_path) in outputs/,
# shared by this server's ranks so that --resume True finds rank 0's checkpoints (on rank 0's server).
USAGE="usage: bash scripts/run_distribute_train.sh DATA_DIR RANK_TABLE_FILE [train.py options]
  run folder ./train_parallel/ (logs, outputs/), kept: launch again with --resume True to continue it
  RANK_TABLE_FILE: the hccl JSON (server_list[] with server_id and device[] of device_id, device_ip, rank_id)
  SERVER_ID=<server_id>: which server of the table this host is (default: the one holding an address of it)
  DRY_RUN=1: print each device's environment and command line, start nothing"
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || die "missing DATA_DIR or RANK_TABLE_FILE"
DATA_DIR=$(abspath "$1"); RANK_TABLE_FILE=$(abspath "$2"); shift 2
require_dir "$DATA_DIR" "DATA_DIR"
require_file "$RANK_TABLE_FILE" "RANK_TABLE_FILE"
[[ "${DRY_RUN:-0}" =~ ^[01]$ ]] || die "DRY_RUN must be 1 (print the commands) or 0, got '$DRY_RUN'"
absolute_args "$@"

# This host's addresses (hostname -I, else ip -o addr), unless SERVER_ID names the server.
if [ -n "${SERVER_ID:-}" ]; then
  HOST_IDS=("$SERVER_ID")
else
  read -r -a HOST_IDS <<< "$( { hostname -I 2>/dev/null; ip -o addr show 2>/dev/null | awk '{sub(/\/.*/, "", $4); print $4}'; } \
    | tr ' ' '\n' | sort -u | tr '\n' ' ')"
fi
TABLE=$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m model_utils.rank_table "$RANK_TABLE_FILE" "${HOST_IDS[@]}" 2>&1) \
  || die "${TABLE#error: }"
RANK_SIZE=$(head -n 1 <<< "$TABLE")
mapfile -t DEVICES < <(tail -n +2 <<< "$TABLE")

RUN_DIR=$PWD/train_parallel
if [ "${DRY_RUN:-0}" = 1 ]; then check_run_dir train_parallel "${ARGS[@]}"; else open_run_dir train_parallel "${ARGS[@]}"; fi
export RANK_TABLE_FILE RANK_SIZE
CORES=$(nproc)
PER=$(( CORES / ${#DEVICES[@]} > 0 ? CORES / ${#DEVICES[@]} : 1 ))
echo "this server: ${#DEVICES[@]} of the table's $RANK_SIZE devices"
for ((i = 0; i < ${#DEVICES[@]}; i++)); do
  read -r rank device <<< "${DEVICES[i]}"
  start=$(( i * PER % CORES )); end=$(( start + PER - 1 ))
  cmd=(taskset -c "$start-$end" "$PYTHON" "$ROOT/train.py" --data_dir "$DATA_DIR" --device_target Ascend
       --is_distributed 1 --ckpt_path "$RUN_DIR/outputs" "${ARGS[@]}")
  if [ "${DRY_RUN:-0}" = 1 ]; then
    echo "RANK_TABLE_FILE=$(printf %q "$RANK_TABLE_FILE") RANK_SIZE=$RANK_SIZE RANK_ID=$rank DEVICE_ID=$device" \
      "$(printf '%q ' "${cmd[@]}")> $(printf %q "$RUN_DIR/worker_$rank.log")"
    continue
  fi
  echo "rank $rank on device $device, cores $start-$end; log: $RUN_DIR/worker_$rank.log"
  (export DEVICE_ID=$device RANK_ID=$rank; cd "$RUN_DIR" && "${cmd[@]}" > "worker_$rank.log" 2>&1) &
done
wait

#!/usr/bin/env bash
# Helpers shared by the launchers (sourced, not run).

# Absolute path of $1 (which need not exist yet).
abspath() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
  esac
}

# die MESSAGE: print the usage (from the caller's $USAGE) and the problem, exit 1.
die() {
  echo "$USAGE" >&2
  echo "error: $1" >&2
  exit 1
}

require_dir() { [ -d "$1" ] || die "$2 not found: $1"; }
require_file() { [ -f "$1" ] || die "$2 not found: $1"; }
require_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]] || die "$2 must be a positive integer, got '$1'"; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}

# standalone_train TARGET DATA_DIR [train.py args]: one device, log in ./train/log.txt
standalone_train() {
  local target=$1; shift
  [ $# -ge 1 ] || die "missing DATA_DIR"
  local data_dir; data_dir=$(abspath "$1"); shift
  require_dir "$data_dir" "DATA_DIR"
  rm -rf train && mkdir train && cd train || exit 1
  echo "training on $target device ${DEVICE_ID:-0}; log: $PWD/log.txt"
  "$PYTHON" "$ROOT/train.py" --data_dir "$data_dir" --device_target "$target" --device_id "${DEVICE_ID:-0}" \
    --is_distributed 0 "$@" > log.txt 2>&1
}

# msrun_train TARGET COUNT_NAME PORT DATA_DIR COUNT [train.py args]: data parallel through msrun,
# logs in ./train_parallel/worker_RANK.log
msrun_train() {
  local target=$1 count_name=$2 port=$3; shift 3
  [ $# -ge 2 ] || die "missing DATA_DIR or $count_name"
  local data_dir count; data_dir=$(abspath "$1"); count=$2; shift 2
  require_dir "$data_dir" "DATA_DIR"
  require_count "$count" "$count_name"
  command -v msrun >/dev/null || die "msrun not on PATH (activate the environment that has mindspore)"
  rm -rf train_parallel && mkdir train_parallel || exit 1
  echo "training on $count $target workers; logs: $PWD/train_parallel/worker_*.log"
  msrun --worker_num="$count" --local_worker_num="$count" --master_port="${MASTER_PORT:-$port}" \
    --log_dir=train_parallel --join=True \
    "$ROOT/train.py" --data_dir "$data_dir" --device_target "$target" --is_distributed 1 "$@"
}

# eval_on TARGET DATA_DIR CKPT [eval.py args]: results and log in ./eval/
eval_on() {
  local target=$1; shift
  [ $# -ge 2 ] || die "missing DATA_DIR or CKPT"
  local data_dir ckpt; data_dir=$(abspath "$1"); ckpt=$(abspath "$2"); shift 2
  require_dir "$data_dir" "DATA_DIR"
  require_file "$ckpt" "CKPT"
  rm -rf eval && mkdir eval && cd eval || exit 1
  echo "evaluating on $target device ${DEVICE_ID:-0}; log: $PWD/log.txt"
  "$PYTHON" "$ROOT/eval.py" --data_dir "$data_dir" --pretrained "$ckpt" --device_target "$target" \
    --device_id "${DEVICE_ID:-0}" --eval_dir "$PWD" "$@" > log.txt 2>&1
}

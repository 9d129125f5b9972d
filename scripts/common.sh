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
# One token per launch, shared by every process it starts (ModelArts copy markers, see moxing_adapter.py).
export YOLO_JOB_TOKEN=${YOLO_JOB_TOKEN:-$(date +%s%N)-$$}

# absolute_args [script options]: the options in ARGS, every path among them (--config_path, --resume_yolo,
# --pretrained, --ckpt_path, ...: the path kinds of default_config.yaml's checks) made absolute against the
# caller's folder, so that they mean what the user typed after a launcher changes folder.
absolute_args() {
  local listing
  listing=$(mktemp) || exit 1
  if ! PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m model_utils.checks --absolute --null "$@" \
      > "$listing" 2> "$listing.err"; then
    local problem; problem=$(tail -n 1 "$listing.err")
    rm -f "$listing" "$listing.err"
    die "${problem#error: }"
  fi
  mapfile -d '' -t ARGS < "$listing"
  rm -f "$listing" "$listing.err"
}

# option_value KEY [script options]: the value of the last --KEY among the options (empty if none).
option_value() {
  local key=$1 prev="" arg value=""; shift
  for arg in "$@"; do
    case "$arg" in
      --$key=*) value=${arg#--$key=} ;;
      *) [ "$prev" = "--$key" ] && value=$arg ;;
    esac
    prev=$arg
  done
  printf '%s' "$value"
}

# wants_resume [train.py args]: whether the arguments hold --resume True.
wants_resume() {
  [[ "$(option_value resume "$@")" =~ ^([Tt]rue|TRUE|1|[Yy]es)$ ]]
}

# open_run_dir DIR [train.py args]: the launch's run folder. Never deletes anything: a folder holding
# checkpoints is continued with --resume True and refused otherwise; earlier logs are kept (keep_logs).
open_run_dir() {
  check_run_dir "$@"
  keep_logs "$1"
}

# check_run_dir DIR [train.py args]: refuse a folder holding checkpoints unless --resume True (changes nothing).
check_run_dir() {
  local dir=$1; shift
  if ! wants_resume "$@" && [ -n "$(find "$dir" -name '*.ckpt' -print -quit 2>/dev/null)" ]; then
    die "$PWD/$dir holds checkpoints of an earlier run: add --resume True to continue it, or launch from another folder"
  fi
}

# keep_logs DIR: create DIR if needed and rename the logs of an earlier launch in it to NAME.N.
keep_logs() {
  local dir=$1 log n
  mkdir -p "$dir" || exit 1
  for log in "$dir"/log.txt "$dir"/worker_*.log "$dir"/scheduler.log; do
    [ -f "$log" ] || continue
    n=1
    while [ -e "$log.$n" ]; do n=$((n + 1)); done
    mv "$log" "$log.$n"
  done
}

# run_logged LOG COMMAND...: COMMAND with its output in LOG; on failure its last error line (or the log's path)
# on stderr, and its exit code.
run_logged() {
  local log=$1; shift
  "$@" > "$log" 2>&1 && return 0
  local rc=$? problem
  problem=$(grep '^error:' "$log" | tail -n 1)
  echo "${problem:-error: exit code $rc} (log: $PWD/$log)" >&2
  return $rc
}

# standalone_train TARGET DATA_DIR [train.py args]: one device; work dir, outputs and log in ./train/
standalone_train() {
  local target=$1; shift
  [ $# -ge 1 ] || die "missing DATA_DIR"
  local data_dir; data_dir=$(abspath "$1"); shift
  require_dir "$data_dir" "DATA_DIR"
  absolute_args "$@"
  open_run_dir train "${ARGS[@]}"
  cd train || exit 1
  local shown; shown=$(option_value device_target "${ARGS[@]}")
  echo "training on ${shown:-$target} device ${DEVICE_ID:-0}; log: $PWD/log.txt"
  run_logged log.txt "$PYTHON" "$ROOT/train.py" --data_dir "$data_dir" --device_target "$target" \
    --device_id "${DEVICE_ID:-0}" --is_distributed 0 "${ARGS[@]}"
}

# require_node_env PORT: NODE_NUM, NODE_RANK, MASTER_ADDR, MASTER_PORT of a (multi-node) msrun launch,
# checked, with their one-node defaults.
require_node_env() {
  NODE_NUM=${NODE_NUM:-1} NODE_RANK=${NODE_RANK:-0} MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} MASTER_PORT=${MASTER_PORT:-$1}
  require_count "$NODE_NUM" "NODE_NUM"
  [[ "$NODE_RANK" =~ ^(0|[1-9][0-9]*)$ ]] || die "NODE_RANK must be an integer >= 0, got '$NODE_RANK'"
  [ "$NODE_RANK" -lt "$NODE_NUM" ] || die "NODE_RANK must be less than NODE_NUM ($NODE_NUM), got $NODE_RANK"
  [[ "$MASTER_PORT" =~ ^[1-9][0-9]*$ ]] && [ "$MASTER_PORT" -ge 1024 ] && [ "$MASTER_PORT" -le 65535 ] \
    || die "MASTER_PORT must be an integer from 1024 to 65535, got '$MASTER_PORT'"
  [[ "$MASTER_ADDR" =~ ^[A-Za-z0-9.:_-]+$ ]] || die "MASTER_ADDR must be node 0's address or host name, got '$MASTER_ADDR'"
}

# msrun_usage SCRIPT COUNT_NAME WHAT PORT: the msrun launchers' usage text, into $USAGE.
msrun_usage() {
  local script=$1 count_name=$2 what=$3 port=$4
  USAGE="usage: bash scripts/$script DATA_DIR $count_name [train.py options]
  run folder ./train_parallel/ (logs, outputs/), kept: launch again with --resume True to continue it
  $count_name: this node's $what; several nodes: the same command on each, with NODE_NUM=N (default 1),
  NODE_RANK=0..N-1 (default 0), MASTER_ADDR=node 0's address (default 127.0.0.1), MASTER_PORT (default $port)"
}

# msrun_train TARGET COUNT_NAME PORT DATA_DIR COUNT [train.py args]: data parallel through msrun over NODE_NUM
# nodes of COUNT workers each (same command on every node but NODE_RANK; node 0 at MASTER_ADDR:MASTER_PORT
# runs the scheduler). Logs in ./train_parallel/worker_RANK.log (several nodes: ./train_parallel/node_R/),
# outputs (unless --ckpt_path) in ./train_parallel/outputs/
msrun_train() {
  local target=$1 count_name=$2 port=$3; shift 3
  [ $# -ge 2 ] || die "missing DATA_DIR or $count_name"
  local data_dir count; data_dir=$(abspath "$1"); count=$2; shift 2
  require_dir "$data_dir" "DATA_DIR"
  require_count "$count" "$count_name"
  require_node_env "$port"
  command -v msrun >/dev/null || die "msrun not on PATH (activate the environment that has mindspore)"
  absolute_args "$@"
  local log_dir=train_parallel
  [ "$NODE_NUM" -eq 1 ] || log_dir=train_parallel/node_$NODE_RANK
  open_run_dir train_parallel "${ARGS[@]}"
  [ "$log_dir" = train_parallel ] || keep_logs "$log_dir"
  if [ "$NODE_NUM" -eq 1 ]; then
    echo "training on $count $target workers; logs: $PWD/$log_dir/worker_*.log"
  else
    echo "training on node $NODE_RANK of $NODE_NUM ($count of $((NODE_NUM * count)) $target workers, master" \
      "$MASTER_ADDR:$MASTER_PORT); logs: $PWD/$log_dir/worker_*.log"
  fi
  msrun --worker_num="$((NODE_NUM * count))" --local_worker_num="$count" --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" --log_dir="$log_dir" --join=True \
    "$ROOT/train.py" --data_dir "$data_dir" --device_target "$target" --is_distributed 1 \
    --ckpt_path "$PWD/train_parallel/outputs" "${ARGS[@]}"
}

# eval_on TARGET DATA_DIR CKPT [eval.py args]: results and log in ./eval/
eval_on() {
  local target=$1; shift
  [ $# -ge 2 ] || die "missing DATA_DIR or CKPT"
  local data_dir ckpt; data_dir=$(abspath "$1"); ckpt=$(abspath "$2"); shift 2
  require_dir "$data_dir" "DATA_DIR"
  require_file "$ckpt" "CKPT"
  absolute_args "$@"
  keep_logs eval
  cd eval || exit 1
  local shown; shown=$(option_value device_target "${ARGS[@]}")
  echo "evaluating on ${shown:-$target} device ${DEVICE_ID:-0}; log: $PWD/log.txt"
  run_logged log.txt "$PYTHON" "$ROOT/eval.py" --data_dir "$data_dir" --pretrained "$ckpt" \
    --device_target "$target" --device_id "${DEVICE_ID:-0}" --eval_dir "$PWD" "${ARGS[@]}"
}

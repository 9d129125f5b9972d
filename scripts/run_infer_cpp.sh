#!/usr/bin/env bash
# C++ inference (ascend310_infer) on a folder of images and its COCO AP: build if needed, infer,
# postprocess. Everything lands in the working directory.
USAGE="usage: bash scripts/run_infer_cpp.sh MODEL_PATH DATA_PATH ANNO_PATH DEVICE_TYPE [DEVICE_ID]
  MODEL_PATH   CPU: the ONNX from export.py (--file_format ONNX --batch_size 1); Ascend: the MINDIR
  DATA_PATH    folder of images; ANNO_PATH: their COCO annotation file
  DEVICE_TYPE  CPU or Ascend; DEVICE_ID (default 0): the Ascend device
  The model's card (export.py writes it into the model) gives the input size, letterbox and the classes
  and category ids that map labels to the annotation file's categories. IMAGE_SIZE, LETTERBOX (env,
  True|False): for a model exported without a card (default 416, True); CKPT_FILE (env): that model's
  train.py checkpoint, for its classes (default: COCO's 80); BUILD_DIR (env, default ascend310_infer/build);
  PYTHON (env, default python3)
  writes result_Files/, time_Result/, predictions.json, stats.json, acc.log and build/infer/postprocess logs"
source "$(dirname "$0")/common.sh"

[ $# -ge 4 ] || die "missing MODEL_PATH, DATA_PATH, ANNO_PATH or DEVICE_TYPE"
[ $# -le 5 ] || die "too many arguments"
model=$(abspath "$1")
data_path=$(abspath "$2")
anno_path=$(abspath "$3")
device_type=$4
device_id=${5:-0}
require_file "$model" "MODEL_PATH"
require_dir "$data_path" "DATA_PATH"
require_file "$anno_path" "ANNO_PATH"
ckpt=""
if [ -n "${CKPT_FILE:-}" ]; then
  ckpt=$(abspath "$CKPT_FILE")
  require_file "$ckpt" "CKPT_FILE"
fi
case "$device_type" in
  CPU|Ascend) ;;
  *) die "DEVICE_TYPE must be CPU or Ascend, got '$device_type'" ;;
esac
[[ "$device_id" =~ ^[0-9]+$ ]] || die "DEVICE_ID must be a non-negative integer, got '$device_id'"

INFER_DIR="$ROOT/ascend310_infer"
export BUILD_DIR=${BUILD_DIR:-$INFER_DIR/build}
export PYTHON

# fail MESSAGE LOG: the message and the log's last error line, exit 1.
fail() {
  local detail
  detail=$(grep '^error:' "$2" | tail -n 1)
  echo "error: $1 (see $PWD/$2)${detail:+: ${detail#error: }}" >&2
  exit 1
}

bash "$INFER_DIR/build.sh" > build.log 2>&1 || fail "building the C++ app failed" build.log

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
app_args=(--dataset_path="$data_path" --device_type="$device_type" --device_id="$device_id")
[ -z "${IMAGE_SIZE:-}" ] || app_args+=(--image_size="$IMAGE_SIZE")
[ -z "${LETTERBOX:-}" ] || app_args+=(--letterbox="$LETTERBOX")
if [ "$device_type" = CPU ]; then
  "$PYTHON" "$INFER_DIR/onnx_for_opencv.py" --input "$model" --output "$workdir/model_opencv.onnx" > infer.log 2>&1 \
    || fail "lowering $model for OpenCV DNN failed" infer.log
  app_args+=(--model_path="$workdir/model_opencv.onnx")
else
  app_args+=(--model_path="$model" --aipp_path="$INFER_DIR/aipp.cfg")
fi

rm -rf result_Files time_Result
echo "inferring on $device_type; log: $PWD/infer.log"
"$BUILD_DIR/main" "${app_args[@]}" >> infer.log 2>&1 || fail "inference failed" infer.log
cat time_Result/test_perform_static.txt

post_args=(--result_files result_Files --ann_file "$anno_path" --output_dir .)
[ -z "$ckpt" ] || post_args+=(--pretrained "$ckpt")
"$PYTHON" "$ROOT/postprocess.py" "${post_args[@]}" > postprocess.log 2>&1 || fail "postprocessing failed" postprocess.log
cat acc.log

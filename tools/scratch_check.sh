#!/usr/bin/env bash
# The README's from-scratch command on src.data.synthetic's three styles (seed-0 sets of 300 + 100 images at 320),
# then eval.py on each set's val images. Usage: tools/scratch_check.sh OUT_DIR [train.py/eval.py options...]
# e.g. tools/scratch_check.sh /tmp/scratch_bf16 --precision bf16. Prints one line per style: time, val AP50 and AP.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 OUT_DIR [train.py/eval.py options...]" >&2
  exit 2
fi
out=$(realpath -m "$1")
shift
mkdir -p "$out"
cd "$(dirname "$0")/.."
cfg=configs/yolov3_tiny.yaml
for style in plain textured lowcontrast; do
  set_dir="$out/set_$style"
  [ -d "$set_dir" ] || python -m src.data.synthetic --output_dir "$set_dir" --num_train 300 --num_val 100 \
    --image_size 320 --style "$style" > "$out/gen_$style.log"
  start=$(date +%s)
  python train.py --config_path $cfg --data_dir "$set_dir" --training_shape 320 --max_epoch 30 --per_batch_size 16 \
    --ckpt_path "$out/train_$style" --device_target CPU "$@" > "$out/train_$style.log" 2>&1 ||
    { echo "$style: train.py failed: $(tail -1 "$out/train_$style.log")" >&2; exit 1; }
  minutes=$(( ($(date +%s) - start) / 60 ))
  last=$(ls -t "$out/train_$style/ckpt_0"/*.ckpt | head -1)
  python eval.py --config_path $cfg --data_dir "$set_dir" --pretrained "$last" \
    --testing_shape 320 --device_target CPU --eval_dir "$out/eval_$style" "$@" > "$out/eval_$style.log" 2>&1 ||
    { echo "$style: eval.py failed: $(tail -1 "$out/eval_$style.log")" >&2; exit 1; }
  ap=$(grep -m1 "IoU=0.50:0.95 | area=   all | maxDets=100" "$out/eval_$style.log" | awk '{print $NF}')
  ap50=$(grep -m1 "IoU=0.50      | area=   all | maxDets=100" "$out/eval_$style.log" | awk '{print $NF}')
  echo "$style: trained in $minutes min, val AP50 $ap50, AP $ap"
done

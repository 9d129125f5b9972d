#!/usr/bin/env bash
# The README's own-data recipe (anchors fitted at 320 into a config, fine-tune the converted COCO yolov3-tiny 10
# epochs at 320 with val AP each epoch, eval best.ckpt at 320) on tests/own_data.py's two 3-class sets, beside the
# same fine-tune with the model config's anchors. Usage: tools/own_data_check.sh OUT_DIR YOLOV3_TINY_CKPT
# [train.py options...]. Prints one line per set and anchors: time, val AP50 and AP.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 OUT_DIR YOLOV3_TINY_CKPT [train.py options...]" >&2
  exit 2
fi
out=$(realpath -m "$1")
weights=$(realpath "$2")
shift 2
mkdir -p "$out"
cd "$(dirname "$0")/.."
[ -d "$out/sets/shapes" ] || python tests/own_data.py "$out/sets" > "$out/sets.log"
for set in shapes signs; do
  data="$out/sets/$set"
  python -m src.data.anchors --data_dir "$data" --config_path configs/yolov3_tiny.yaml --size 320 \
    --save_config "$out/${set}_anchors.yaml" > "$out/${set}_anchors.log"
  for anchors in fitted config; do
    cfg=configs/yolov3_tiny.yaml
    [ "$anchors" = config ] || cfg="$out/${set}_anchors.yaml"
    run="$out/${set}_$anchors"
    start=$(date +%s)
    python train.py --config_path "$cfg" --data_dir "$data" --resume_yolo "$weights" --training_shape 320 \
      --max_epoch 10 --per_batch_size 16 --ckpt_path "$run" --run_eval True --testing_shape 320 "$@" \
      > "$run.train.log" 2>&1 || { echo "$set $anchors: train.py failed: $(tail -1 "$run.train.log")" >&2; exit 1; }
    minutes=$(( ($(date +%s) - start) / 60 ))
    python eval.py --config_path "$cfg" --data_dir "$data" --pretrained "$run/ckpt_0/best.ckpt" --testing_shape 320 \
      --eval_dir "$run/eval" > "$run.eval.log" 2>&1 ||
      { echo "$set $anchors: eval.py failed: $(tail -1 "$run.eval.log")" >&2; exit 1; }
    ap=$(grep -m1 "IoU=0.50:0.95 | area=   all | maxDets=100" "$run.eval.log" | awk '{print $NF}')
    ap50=$(grep -m1 "IoU=0.50      | area=   all | maxDets=100" "$run.eval.log" | awk '{print $NF}')
    echo "$set, $anchors anchors: trained in $minutes min, val AP50 $ap50, AP $ap"
  done
done

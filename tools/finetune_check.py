"""Rerunnable check that fine-tuning keeps and improves pretrained weights (issue 32, docs/training.md).

Fine-tunes darknet's COCO yolov3-tiny on a small COCO-layout set with the command a new user would type (the model
config, --resume_yolo, --lr 0.001, 20 epochs at 416, batch 8), once per config given, then scores the start and the
result with eval.py (416, letterboxed) on the training and the val images:

    python tools/finetune_check.py --data_dir ../shared/data/coco_tiny --weights yolov3_tiny.ckpt \
        --output_dir outputs/finetune_check [--configs configs/yolov3_tiny.yaml,configs/yolov3_tiny_finetune.yaml] \
        [-- more train.py options]

Passes (exit 0) when every run's train AP is at least 1.5x its start and its val AP at least half its start.
A run whose checkpoint holds averaged weights (ema) is also scored on the weights training went on with ("raw").
Results: OUTPUT_DIR/results.json.
"""
import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import mindspore as ms  # noqa: E402

from src.errors import UserError, run_cli  # noqa: E402
from src.formats.checkpoint import EMA_PREFIX, save_checkpoint  # noqa: E402

TRAIN_GAIN = 1.5  # train AP at least this times its start
VAL_KEPT = 0.5  # val AP at least this fraction of its start
COMMAND = ["--training_shape", "416", "--max_epoch", "20", "--per_batch_size", "8", "--lr", "0.001",
           "--warmup_epochs", "1"]


def run(argv: List[str], log: str) -> None:
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise UserError(f"{' '.join(argv[:2])} failed (exit {proc.returncode}); see {log}")


def score(config: str, weights: str, data_dir: str, split: str, out: str) -> Dict[str, float]:
    """eval.py's AP and AP50 of `weights` on DATA_DIR's train2017 or val2017 images."""
    run(["eval.py", "--config_path", config, "--pretrained", weights, "--testing_shape", "416",
         "--ann_file", os.path.join(data_dir, "annotations", f"instances_{split}2017.json"),
         "--image_dir", os.path.join(data_dir, f"{split}2017"), "--eval_dir", out], out + ".log")
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    return {"AP": stats["AP"], "AP50": stats["AP50"]}


def without_averages(path: str, out: str) -> str:
    """A copy of a train.py checkpoint without its averaged weights (and optimiser state): the raw weights."""
    ckpt = ms.load_checkpoint(path)
    params = {k: v for k, v in ckpt.items() if isinstance(v, ms.Parameter) and not k.startswith(EMA_PREFIX)
              and not k.startswith("optimizer.")}
    save_checkpoint(params, out, {k: v for k, v in ckpt.items() if not isinstance(v, ms.Parameter)})
    return out


def last_checkpoint(folder: str) -> str:
    steps = {int(f[:-len(".ckpt")].rsplit("_", 1)[1]): f for f in os.listdir(folder) if f[0].isdigit()}
    return os.path.join(folder, steps[max(steps)])


def judge(start: Dict[str, Dict[str, float]], end: Dict[str, Dict[str, float]]) -> Dict[str, object]:
    gain = end["train"]["AP"] / start["train"]["AP"]
    kept = end["val"]["AP"] / start["val"]["AP"]
    return {"train_AP": end["train"]["AP"], "val_AP": end["val"]["AP"], "train_gain": gain, "val_kept": kept,
            "passed": gain >= TRAIN_GAIN and kept >= VAL_KEPT}


def check(args, extra: List[str]) -> bool:
    os.makedirs(args.output_dir, exist_ok=True)
    configs = [c if os.path.exists(c) else os.path.join(ROOT, c) for c in args.configs.split(",") if c]
    start = {split: score(configs[0], args.weights, args.data_dir, split,
                          os.path.join(args.output_dir, f"start_{split}")) for split in ("train", "val")}
    results = {"start": start, "runs": {}}
    print(f"start: train AP {start['train']['AP']:.3f}, val AP {start['val']['AP']:.3f}")
    for config in configs:
        name = os.path.splitext(os.path.basename(config))[0]
        out = os.path.join(args.output_dir, name)
        run(["train.py", "--config_path", config, "--data_dir", args.data_dir, "--resume_yolo", args.weights,
             *COMMAND, "--ckpt_path", out, *extra], out + ".log")
        final = last_checkpoint(os.path.join(out, "ckpt_0"))
        weights = {"model": final}
        if any(k.startswith(EMA_PREFIX) for k in ms.load_checkpoint(final)):
            weights["raw"] = without_averages(final, os.path.join(out, "raw.ckpt"))
        config = os.path.relpath(config, ROOT) if config.startswith(ROOT + os.sep) else config
        results["runs"][config] = {}
        for kind, path in weights.items():
            end = {split: score(config, path, args.data_dir, split, os.path.join(out, f"{kind}_{split}"))
                   for split in ("train", "val")}
            verdict = judge(start, end)
            results["runs"][config][kind] = verdict
            print(f"{config} ({kind}{', averaged' if kind == 'model' and 'raw' in weights else ''}): train AP "
                  f"{start['train']['AP']:.3f} -> {verdict['train_AP']:.3f} ({verdict['train_gain']:.2f}x, needs "
                  f"{TRAIN_GAIN}x), val AP {start['val']['AP']:.3f} -> {verdict['val_AP']:.3f} "
                  f"({verdict['val_kept']:.0%} kept, needs {VAL_KEPT:.0%}): "
                  f"{'pass' if verdict['passed'] else 'FAIL'}")
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    return all(r["model"]["passed"] for r in results["runs"].values())


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--weights", required=True, help="converted darknet yolov3-tiny (.ckpt or .weights)")
    parser.add_argument("--output_dir", default="outputs/finetune_check")
    parser.add_argument("--configs", default="configs/yolov3_tiny.yaml,configs/yolov3_tiny_finetune.yaml")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    for path in (args.data_dir, args.weights):
        if not os.path.exists(path):
            raise UserError(f"not found: {path}")
    args.data_dir, args.weights, args.output_dir = (os.path.abspath(p) for p in
                                                    (args.data_dir, args.weights, args.output_dir))
    if not check(args, extra):
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)

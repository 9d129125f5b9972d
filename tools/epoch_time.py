"""The time of one COCO train2017 epoch, extrapolated from a timed slice of real training.

Runs train.py as a user would (the model's config and its recipe, the options given) on a COCO-layout set for
one epoch with a log line per iteration, takes the images/s of the iterations after the first (compilation and
warm-up), and extrapolates to COCO train2017's 118,287 images:

    python tools/epoch_time.py --config_path configs/yolov3_tiny.yaml --data_dir ../shared/data/coco_tiny \
        [-- more train.py options]

Defaults: --training_shape 416 --per_batch_size 16 (given options win). The set needs at least three batches.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from src.errors import UserError, run_cli  # noqa: E402

COCO_TRAIN_IMAGES = 118287
FPS = re.compile(r"epoch\[\d+\], iter\[(\d+)\], loss:[^,]+, fps:([0-9.]+) imgs/sec")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_path", required=True)
    parser.add_argument("--data_dir", required=True)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, os.path.join(ROOT, "train.py"), "--config_path", args.config_path, "--data_dir",
                args.data_dir, "--training_shape", "416", "--per_batch_size", "16", *extra, "--max_epoch", "1",
                "--log_interval", "1", "--ckpt_path", out]
        proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise UserError(f"train.py failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    rates = [float(fps) for step, fps in FPS.findall(proc.stdout + proc.stderr) if int(step) > 1]
    if len(rates) < 2:
        raise UserError(f"{args.data_dir} gave {len(rates) + 1} iterations; the slice needs three or more")
    rate = statistics.median(rates)
    hours = COCO_TRAIN_IMAGES / rate / 3600
    print(f"{os.path.basename(args.config_path)}: {rate:.2f} images/s (median of iterations 2-{len(rates) + 1} of "
          f"one epoch on {args.data_dir}); one COCO train2017 epoch ({COCO_TRAIN_IMAGES} images): {hours:.1f} h "
          f"(extrapolated)")


if __name__ == "__main__":
    run_cli(main)

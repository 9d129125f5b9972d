"""Anchor priors fitted to a data set: k-means on the training boxes with 1 - IoU as the distance.

    python -m src.data.anchors --data_dir D [--num_anchors 9] [--size 416] [--config_path configs/x.yaml]
                               [--save_config D/mine.yaml]

reads D/annotations/instances_train2017.json (or --ann_file), scales every box
as the network input of --size sees it (letterboxed, or stretched with
--letterbox False), and prints anchor_scales for a config, smallest first, with
the mean best IoU of the boxes against them and against the config's current
anchors. The IoU of two sizes is that of boxes sharing a centre (darknet's
calc_anchors, ultralytics' autoanchor). Seeded by the config's seed.
--save_config writes a config file that builds on --config_path with these
anchors, for train.py and eval.py's --config_path.
"""
import argparse
import json
import os
import shlex
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

from model_utils.config import DEFAULT_CONFIG, load_config
from src.data.augment import MIN_BOX_PX
from src.data.coco import load_coco
from src.errors import UserError, run_cli
from src.fileio import write_text

RESTARTS = 5
MAX_ITERATIONS = 300


def training_box_sizes(ann_file: str, size: int, letterbox: bool) -> np.ndarray:
    """(N, 2) widths and heights in input pixels of the non-crowd boxes; boxes under MIN_BOX_PX are left out
    (training drops them too)."""
    coco = load_coco(ann_file)
    sizes = []
    for ann in coco.dataset.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        img = coco.imgs.get(ann["image_id"], {})
        width, height = img.get("width", 0), img.get("height", 0)
        if not width or not height:
            raise UserError(f"{ann_file}: image {ann['image_id']} has no width and height")
        sx, sy = (min(size / width, size / height),) * 2 if letterbox else (size / width, size / height)
        sizes.append((ann["bbox"][2] * sx, ann["bbox"][3] * sy))
    boxes = np.array(sizes, np.float64).reshape(-1, 2)
    return boxes[(boxes >= MIN_BOX_PX).all(axis=1)]


def wh_iou(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(N, K) IoU of centred boxes of sizes `boxes` (N, 2) and `anchors` (K, 2)."""
    inter = (np.minimum(boxes[:, None, 0], anchors[None, :, 0]) *
             np.minimum(boxes[:, None, 1], anchors[None, :, 1]))
    return inter / (boxes[:, None].prod(-1) + anchors[None].prod(-1) - inter)


def mean_best_iou(boxes: np.ndarray, anchors: np.ndarray) -> float:
    return float(wh_iou(boxes, np.asarray(anchors, np.float64)).max(axis=1).mean())


def _kmeans_once(boxes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding, then Lloyd steps (nearest = highest IoU, centre = mean size)."""
    centres = boxes[[int(rng.integers(len(boxes)))]]
    while len(centres) < k:
        d = 1.0 - wh_iou(boxes, centres).max(axis=1)
        p = d ** 2
        centres = np.vstack([centres, boxes[rng.choice(len(boxes), p=p / p.sum())]])
    assign = None
    for _ in range(MAX_ITERATIONS):
        iou = wh_iou(boxes, centres)
        new = iou.argmax(axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = boxes[assign == j]
            # an emptied cluster restarts at the box its centre serves worst
            centres[j] = members.mean(axis=0) if len(members) else boxes[iou.max(axis=1).argmin()]
    return centres


def fit_anchors(boxes: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k integer (w, h) anchors, smallest area first: the best of RESTARTS seeded k-means runs."""
    if len(np.unique(boxes, axis=0)) < k:
        raise UserError(f"{len(np.unique(boxes, axis=0))} distinct box sizes are too few for {k} anchors")
    rng = np.random.default_rng(seed)
    best, best_fit = None, -1.0
    for _ in range(RESTARTS):
        anchors = np.maximum(np.round(_kmeans_once(boxes, k, rng)), 1)
        fit = mean_best_iou(boxes, anchors)
        if fit > best_fit:
            best, best_fit = anchors, fit
    return best[np.argsort(best.prod(axis=1), kind="stable")].astype(int)


def fit_to_training_set(ann_file: str, config) -> Tuple[List[List[int]], float, float, int]:
    """train.py's auto_anchor: as many anchors as the config's anchor_scales, fitted to the boxes of ann_file at the
    input size this command also uses; with the mean best IoU of the boxes against them and against the config's
    anchors, and the number of boxes. A UserError when the boxes have fewer distinct sizes than anchors."""
    boxes = training_box_sizes(ann_file, config.training_shape or config.testing_shape, config.letterbox)
    current = np.array(config.anchor_scales, np.float64)
    fitted = fit_anchors(boxes, len(current), config.seed)
    return fitted.tolist(), mean_best_iou(boxes, fitted), mean_best_iou(boxes, current), len(boxes)


def anchor_mask_for(k: int, num_scales: int) -> Optional[List[List[int]]]:
    """Anchors split evenly over the scales, coarsest scale (largest anchors) first, or None if they do not split."""
    if k % num_scales:
        return None
    per = k // num_scales
    return [list(range(s * per, (s + 1) * per)) for s in reversed(range(num_scales))]


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    own.add_argument("--num_anchors", type=int)
    own.add_argument("--size", type=int)
    own.add_argument("--save_config", default="")
    try:
        args, rest = own.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise UserError(str(e)) from None
    config = load_config(rest, description=(
        "Fit anchor_scales to the training boxes of --data_dir (or --ann_file) by k-means with 1 - IoU. "
        "Own options: --num_anchors N (default: as many as the config's anchor_scales), --size S (network "
        "input size; default: training_shape, else testing_shape), --save_config FILE (a config building on "
        "--config_path with the fitted anchors). Any config key below may be given too."))
    if args.save_config and os.path.isdir(args.save_config):
        raise UserError(f"save_config {args.save_config} is a folder; give a file name")
    current = np.array(config.anchor_scales, np.float64)
    k = len(current) if args.num_anchors is None else args.num_anchors
    size = (config.training_shape or config.testing_shape) if args.size is None else args.size
    if k < 1 or size < 1:
        raise UserError(f"--num_anchors and --size must be positive, got {k} and {size}")
    if config.ann_file:
        ann_file = config.ann_file
    elif config.data_dir:
        ann_file = os.path.join(config.data_dir, "annotations", "instances_train2017.json")
    else:
        raise UserError("give --data_dir (COCO layout) or --ann_file")
    boxes = training_box_sizes(ann_file, size, config.letterbox)
    if not len(boxes):
        raise UserError(f"{ann_file} has no boxes of {MIN_BOX_PX:g} px or more at input size {size}")
    anchors = fit_anchors(boxes, k, config.seed)
    flat = ",".join(str(v) for v in anchors.ravel())
    mode = "letterboxed" if config.letterbox else "stretched"
    print(f"{len(boxes)} boxes of {ann_file} at input size {size} ({mode}), k-means with 1 - IoU, seed {config.seed}")
    print(f"anchor_scales: {anchors.tolist()}")
    options = f"--anchor_scales {flat}"
    keys = {"anchor_scales": anchors.tolist()}
    if k != len(current):
        mask = anchor_mask_for(k, len(config.anchor_mask))
        if mask is None:
            print(f"note: set anchor_mask by hand: {k} anchors do not split evenly over "
                  f"{len(config.anchor_mask)} scales")
        else:
            print(f"anchor_mask: {mask}")
            options += f" --anchor_mask {shlex.quote(str(mask).replace(' ', ''))}"
            keys["anchor_mask"] = mask
    print(options)
    fit = (f"mean best IoU: {mean_best_iou(boxes, anchors):.4f} with these {k} anchors, "
           f"{mean_best_iou(boxes, current):.4f} with the current {len(current)} ({config.config_path})")
    print(fit)
    if args.save_config:
        base = f"_base_: {json.dumps(config.config_path)}\n" if config.config_path != DEFAULT_CONFIG else ""
        write_text(args.save_config, f"# python -m src.data.anchors on {ann_file} at input size {size} ({mode}); "
                   f"{fit}\n{base}" + "".join(f"{key}: {json.dumps(value)}\n" for key, value in keys.items()))
        print(f"written {args.save_config}: {config.config_path} with these anchors")


if __name__ == "__main__":
    run_cli(main)

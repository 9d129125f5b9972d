"""Time COCO bbox scoring at val2017 scale: pycocotools' COCOeval (what eval.py used) against
src.data.coco.evaluate (faster-coco-eval), on the same synthetic files; print both stats and whether they agree.

    python tools/coco_eval_speed.py [--output_dir DIR] [--images 5000] [--boxes 36781] [--detections 100]

Makes a ground-truth file like val2017's (5,000 images, 36,781 boxes over COCO's 80 category ids, about
1% crowd) and a result file of 100 detections an image (jittered copies of the image's boxes, some with
another category, and random boxes, scores from 0.005 to 1), writes them to OUTPUT_DIR
(instances_val2017.json, predictions.json), then scores them as eval.py does.
"""
import argparse
import contextlib
import io
import json
import os
import sys
import time
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.data.coco import STAT_KEYS, evaluate, load_coco  # noqa: E402
from src.fileio import write_json  # noqa: E402

COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def _random_boxes(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    """n (x, y, w, h) boxes inside the image, sizes log-uniform from 4 px to the image's size."""
    w = np.minimum(np.exp(rng.uniform(np.log(4), np.log(width), n)), width - 1)
    h = np.minimum(np.exp(rng.uniform(np.log(4), np.log(height), n)), height - 1)
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    return np.stack([x, y, w, h], 1)


def make_files(num_images: int, num_boxes: int, per_image: int, seed: int = 0) -> Tuple[Dict, List[dict]]:
    """(ground truth in COCO format, detection results) as described in the module docstring."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num_boxes, np.full(num_images, 1.0 / num_images))
    images, annotations, results = [], [], []
    for k, count in enumerate(counts):
        image_id = 100000 + 7 * k
        width, height = int(rng.choice([640, 480, 500])), int(rng.choice([480, 427, 375, 640]))
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height})
        gt = _random_boxes(rng, count, width, height)
        cats = rng.choice(COCO_IDS, count)
        for box, cat in zip(gt, cats):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cat),
                                "bbox": [round(float(v), 2) for v in box], "area": float(box[2] * box[3]),
                                "iscrowd": int(rng.random() < 0.01)})
        hits = min(count * 2, per_image // 2)
        source = rng.integers(0, max(count, 1), hits)
        jittered = gt[source] * (1 + rng.normal(0, 0.08, (hits, 4))) if count else np.zeros((0, 4))
        det_cats = np.where(rng.random(hits) < 0.8, cats[source] if count else 1, rng.choice(COCO_IDS, hits))
        boxes = np.concatenate([jittered, _random_boxes(rng, per_image - hits, width, height)])
        det_cats = np.concatenate([det_cats, rng.choice(COCO_IDS, per_image - hits)])
        scores = np.concatenate([rng.uniform(0.2, 1.0, hits), rng.uniform(0.005, 0.6, per_image - hits)])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], 1.0)
        results += [{"image_id": image_id, "category_id": int(c), "bbox": [round(float(v), 3) for v in b],
                     "score": round(float(s), 5)} for b, c, s in zip(boxes, det_cats, scores)]
    ground_truth = {"images": images, "annotations": annotations,
                    "categories": [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in COCO_IDS]}
    return ground_truth, results


def pycocotools_stats(coco, results: List[dict]) -> np.ndarray:
    """pycocotools' COCOeval, as src.data.coco.evaluate ran it before faster-coco-eval."""
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.array(evaluator.stats)


def package_stats(coco, results: List[dict]) -> np.ndarray:
    """src.data.coco.evaluate, as eval.py scores."""
    stats = evaluate(coco, results)[0]
    return np.array([stats[k] for k in STAT_KEYS])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="outputs/coco_eval_speed")
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--boxes", type=int, default=36781)
    p.add_argument("--detections", type=int, default=100, help="detections an image")
    a = p.parse_args()
    ground_truth, results = make_files(a.images, a.boxes, a.detections)
    ann_file = os.path.join(a.output_dir, "instances_val2017.json")
    result_file = os.path.join(a.output_dir, "predictions.json")
    write_json(ann_file, ground_truth)
    write_json(result_file, results)
    print(f"{len(ground_truth['images'])} images, {len(ground_truth['annotations'])} boxes, {len(results)} "
          f"detections in {a.output_dir}")
    del ground_truth, results
    timed = {}
    for name, score in (("pycocotools", pycocotools_stats), ("faster-coco-eval", package_stats)):
        coco = load_coco(ann_file)
        with open(result_file, encoding="utf-8") as f:
            results = json.load(f)
        start = time.perf_counter()
        stats = score(coco, results)
        timed[name] = (time.perf_counter() - start, stats)
        print(f"{name:>16}: {timed[name][0]:6.1f} s  " + " ".join(f"{k} {v:.4f}" for k, v in zip(STAT_KEYS, stats)))
        del coco, results
    (t0, s0), (t1, s1) = timed.values()
    print(f"speed-up {t0 / t1:.1f}x; stats identical: {bool(np.array_equal(s0, s1))} "
          f"(largest difference {np.abs(s0 - s1).max():.2e})")


if __name__ == "__main__":
    main()

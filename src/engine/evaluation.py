"""The COCO evaluation of a model on an annotated image set, shared by eval.py and train.py's eval during
training: batched detection (split over the ranks when distributed), labels mapped to the file's categories
by name, else id (src.data.coco.label_to_category), COCO metrics (faster-coco-eval), the per-class table,
predictions.json, stats.json and pr_curve.png."""
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from model_utils.device_adapter import all_gather_rows, all_reduce_sum
from src.data.coco import (category_ids, coco_result, evaluate, label_to_category, load_coco,
                           per_class_stats, per_class_table)
from src.engine.detector import Detector, Weights
from src.data.transforms import read_image
from src.engine.plots import pr_curves
from src.fileio import write_json
from src.models.spec import ModelSpec


def detect_images(detector: Detector, paths: List[str], image_ids: List[int], categories: Dict[int, int],
                  indices: List[int]) -> Tuple[List[dict], int]:
    """COCO results for the images at `indices`, read two ahead in threads; and how many were skipped.

    `categories` maps label -> category id; labels it lacks (classes the file does not hold) are dropped."""
    def load(k: int):
        img = read_image(paths[k])
        return None if img is None else detector.prepare(img)

    results: List[dict] = []
    skipped = 0
    bs = detector.batch_size
    with ThreadPoolExecutor(max_workers=2) as pool, \
            tqdm(total=len(indices), desc="eval", disable=not sys.stderr.isatty()) as bar:
        batch: List[Tuple[int, tuple]] = []
        for n, (k, item) in enumerate(zip(indices, pool.map(load, indices))):
            if item is None:
                skipped += 1
                bar.update(1)
            else:
                batch.append((k, item))
            if batch and (len(batch) == bs or n == len(indices) - 1):
                rows = detector.forward(np.stack([p[0] for _, p in batch]))
                for (k_img, (_, mapping, image_size)), r in zip(batch, rows):
                    det = detector.postprocess(r, mapping, image_size)
                    results += [coco_result(image_ids[k_img], categories[int(label)], box, score)
                                for box, score, label in zip(det.boxes, det.scores, det.labels)
                                if int(label) in categories]
                bar.update(len(batch))
                batch = []
    return results, skipped


def gather_results(results: List[dict], skipped: int, image_ids: List[int], category_ids: List[int]
                   ) -> Tuple[List[dict], int]:
    """Distributed eval: every rank's results and skipped count, merged on every rank over the collective layer
    (no folder shared between nodes). Each result travels as int32: the image's and category's positions in
    `image_ids` and `category_ids`, the box x 1000 and the score x 1e5, the precision they are written at."""
    image_at = {i: k for k, i in enumerate(image_ids)}
    category_at = {c: k for k, c in enumerate(category_ids)}
    rows = np.array([[image_at[r["image_id"]], category_at[r["category_id"]], *np.round(np.array(r["bbox"]) * 1e3),
                      round(r["score"] * 1e5)] for r in results], np.int64).reshape(-1, 7)
    gathered = all_gather_rows(rows)
    merged = [coco_result(image_ids[row[0]], category_ids[row[1]], row[2:6] / 1e3, row[6] / 1e5) for row in gathered]
    merged.sort(key=lambda d: (d["image_id"], -d["score"]))
    return merged, int(all_reduce_sum(np.array([skipped]))[0])


def check_categories(spec: ModelSpec, ann_file: str) -> Dict[int, int]:
    """label -> category id of `ann_file` for the model (an error if a category cannot map)."""
    return label_to_category(load_coco(ann_file), ann_file, *spec.categories())


def evaluate_model(config, weights: Weights, ann_file: str, image_dir: str, eval_dir: str,
                   logger) -> Optional[dict]:
    """Detect on every image of `ann_file` (this rank's share when distributed) with `weights` (a .ckpt,
    darknet .weights or a model in memory), score and write the results to `eval_dir`.

    Returns the stats (None on ranks other than 0 in distributed eval); every rank must call it."""
    return evaluate_detector(config, Detector(config, weights, config.per_batch_size), ann_file, image_dir,
                             eval_dir, logger)


def evaluate_detector(config, detector: Detector, ann_file: str, image_dir: str, eval_dir: str,
                      logger) -> Optional[dict]:
    """evaluate_model with a given detector (eval.py --onnx_file: an exported graph in an inference engine)."""
    coco = load_coco(ann_file)
    categories = label_to_category(coco, ann_file, *detector.spec.categories())
    image_ids = sorted(coco.getImgIds())
    paths = [os.path.join(image_dir, coco.imgs[i]["file_name"]) for i in image_ids]
    os.makedirs(eval_dir, exist_ok=True)
    start = time.time()
    indices = list(range(config.rank, len(paths), config.group_size)) if config.is_distributed \
        else list(range(len(paths)))
    results, skipped = detect_images(detector, paths, image_ids, categories, indices)
    detector.log_nonfinite()
    if config.is_distributed:
        results, skipped = gather_results(results, skipped, image_ids, sorted(set(categories.values())))
        if config.rank != 0:
            return None
    seconds = time.time() - start
    write_json(os.path.join(eval_dir, "predictions.json"), results)
    stats, summary, evaluator = evaluate(coco, results)
    if evaluator is not None:
        per_class = per_class_stats(coco, evaluator)
        pr_curves(evaluator.eval["precision"], evaluator.params.recThrs, [r["name"] for r in per_class],
                  [r["instances"] for r in per_class], os.path.join(eval_dir, "pr_curve.png"))
    else:
        per_class = [{"category_id": c, "name": coco.cats[c].get("name", str(c)), "instances": n,
                      "AP": 0.0 if n else None, "AP50": 0.0 if n else None}
                     for c in category_ids(coco) for n in [len(coco.getAnnIds(catIds=[c], iscrowd=False))]]
    stats.update(images=len(paths) - skipped, skipped_images=skipped, seconds=round(seconds, 3), per_class=per_class)
    write_json(os.path.join(eval_dir, "stats.json"), stats)
    logger.info("\n=============coco eval result=========\n%s", summary)
    logger.info("per-class AP (IoU 0.50:0.95) and AP50:\n%s", per_class_table(per_class))
    logger.info("images: %d, skipped: %d, %.2f s (%.2f images/s), results in %s", stats["images"], skipped,
                seconds, stats["images"] / max(seconds, 1e-9), eval_dir)
    return stats

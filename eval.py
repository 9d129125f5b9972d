"""YOLOv3 evaluation on a COCO-format data set: predictions.json and stats.json in eval_dir."""
import json
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

import model_utils  # noqa: F401  first: sets the OpenMP spin count before cv2 and MindSpore load it
import cv2
import numpy as np
from tqdm import tqdm

from model_utils.config import load_config
from model_utils.device_adapter import all_reduce_sum, init_distributed, setup_device
from model_utils.moxing_adapter import run_with_modelarts
from src.coco import category_ids, evaluate, load_coco
from src.detector import Detector
from src.errors import UserError, run_cli
from src.fileio import write_json
from src.logger import get_logger
from src.plots import pr_curves


def read_image(path: str) -> Optional[np.ndarray]:
    """The BGR image, or None (with a warning) when it is missing or unreadable."""
    img = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
    if img is None:
        warnings.warn(f"skipping unreadable or missing image {path}", stacklevel=2)
    return img


def resolve_paths(config) -> Tuple[str, str]:
    if not config.data_dir and not (config.ann_file and config.image_dir):
        raise UserError("give --data_dir (COCO layout) or both --ann_file and --image_dir")
    if config.data_dir and not os.path.isdir(config.data_dir):
        raise UserError(f"data_dir not found: {config.data_dir}")
    ann_file = config.ann_file or os.path.join(config.data_dir, "annotations", "instances_val2017.json")
    image_dir = config.image_dir or os.path.join(config.data_dir, "val2017")
    if not os.path.isdir(image_dir):
        raise UserError(f"image directory not found: {image_dir}")
    return ann_file, image_dir


def detect_images(detector: Detector, paths: List[str], image_ids: List[int], cat_ids: List[int],
                  indices: List[int]) -> Tuple[List[dict], int]:
    """COCO results for the images at `indices`, read two ahead in threads; and how many were skipped."""
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
                    results += [{"image_id": int(image_ids[k_img]), "category_id": int(cat_ids[label]),
                                 "bbox": [round(float(v), 3) for v in box], "score": round(float(score), 5)}
                                for box, score, label in zip(det.boxes, det.scores, det.labels)
                                if label < len(cat_ids)]
                bar.update(len(batch))
                batch = []
    return results, skipped


def gather_parts(config, results: List[dict], skipped: int) -> Optional[Tuple[List[dict], int]]:
    """Distributed eval: every rank writes its part into eval_dir (a folder all ranks share), rank 0
    merges them after an all-reduce has shown every part written (None on other ranks)."""
    part = os.path.join(config.eval_dir, f".part_rank{config.rank}.json")
    write_json(part, {"results": results, "skipped": skipped})
    written = float(all_reduce_sum(np.ones(1))[0])
    if written != config.group_size:
        raise UserError(f"distributed eval: {written:.0f} of {config.group_size} ranks reported their part")
    if config.rank != 0:
        return None
    merged: List[dict] = []
    skipped = 0
    for r in range(config.group_size):
        path = os.path.join(config.eval_dir, f".part_rank{r}.json")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        merged += data["results"]
        skipped += data["skipped"]
        os.remove(path)
    merged.sort(key=lambda d: (d["image_id"], -d["score"]))
    return merged, skipped


def run_eval(config) -> Optional[dict]:
    """Evaluate; returns the stats (None on ranks other than 0 in distributed eval)."""
    logger = get_logger()
    ann_file, image_dir = resolve_paths(config)
    coco = load_coco(ann_file)
    cat_ids = category_ids(coco)
    if not config.pretrained:
        raise UserError("no weights given: --pretrained CKPT (.ckpt or darknet .weights)")
    detector = Detector(config, config.pretrained, config.per_batch_size)
    if len(cat_ids) > config.num_classes:
        raise UserError(f"{ann_file} has {len(cat_ids)} categories but the model has num_classes={config.num_classes}")
    image_ids = sorted(coco.getImgIds())
    paths = [os.path.join(image_dir, coco.imgs[i]["file_name"]) for i in image_ids]
    os.makedirs(config.eval_dir, exist_ok=True)
    start = time.time()
    indices = list(range(config.rank, len(paths), config.group_size)) if config.is_distributed \
        else list(range(len(paths)))
    results, skipped = detect_images(detector, paths, image_ids, cat_ids, indices)
    detector.log_nonfinite()
    if config.is_distributed:
        gathered = gather_parts(config, results, skipped)
        if gathered is None:
            return None
        results, skipped = gathered
    seconds = time.time() - start
    write_json(os.path.join(config.eval_dir, "predictions.json"), results)
    stats, summary, evaluator = evaluate(coco, results)
    stats.update(images=len(paths) - skipped, skipped_images=skipped, seconds=round(seconds, 3))
    write_json(os.path.join(config.eval_dir, "stats.json"), stats)
    if evaluator is not None:
        counts = [len(coco.getAnnIds(catIds=[c], iscrowd=False)) for c in cat_ids]
        names = [coco.cats[c].get("name", str(c)) for c in cat_ids]
        pr_curves(evaluator.eval["precision"], evaluator.params.recThrs, names, counts,
                  os.path.join(config.eval_dir, "pr_curve.png"))
    logger.info("\n=============coco eval result=========\n%s", summary)
    logger.info("images: %d, skipped: %d, %.2f s (%.2f images/s), results in %s", stats["images"], skipped,
                seconds, stats["images"] / max(seconds, 1e-9), config.eval_dir)
    return stats


def main() -> None:
    config = load_config(description=__doc__)
    setup_device(config)
    if config.is_distributed:
        init_distributed(config)
    run_with_modelarts(config, lambda: run_eval(config))


if __name__ == "__main__":
    run_cli(main)

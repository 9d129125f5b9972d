"""YOLOv3 evaluation on a COCO-format data set: predictions.json and stats.json in eval_dir."""
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from model_utils.config import load_config
from model_utils.device_adapter import setup_device
from src.coco import category_ids, evaluate, load_coco
from src.detector import Detector
from src.errors import UserError, run_cli
from src.fileio import write_json
from src.logger import get_logger


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


def run_eval(config) -> dict:
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

    def load(k: int):
        img = read_image(paths[k])
        return None if img is None else (img.shape, detector.prepare(img))

    results: List[dict] = []
    skipped = 0
    start = time.time()
    bs = detector.batch_size
    with ThreadPoolExecutor(max_workers=2) as pool, \
            tqdm(total=len(paths), desc="eval", disable=not sys.stderr.isatty()) as bar:
        loaded = pool.map(load, range(len(paths)))
        batch: List[Tuple[int, tuple]] = []
        for k, item in enumerate(loaded):
            if item is None:
                skipped += 1
            else:
                batch.append((k, item[1]))
            if batch and (len(batch) == bs or k == len(paths) - 1):
                rows = detector.forward(np.stack([p[0] for _, p in batch]))
                for (idx, (_, mapping)), r in zip(batch, rows):
                    det = detector.postprocess(r, mapping)
                    for box, score, label in zip(det.boxes, det.scores, det.labels):
                        results.append({"image_id": int(image_ids[idx]), "category_id": int(cat_ids[label])
                                        if label < len(cat_ids) else -1,
                                        "bbox": [round(float(v), 3) for v in box], "score": round(float(score), 5)})
                bar.update(len(batch))
                batch = []
            elif item is None:
                bar.update(1)
    seconds = time.time() - start
    results = [r for r in results if r["category_id"] >= 0]
    os.makedirs(config.eval_dir, exist_ok=True)
    write_json(os.path.join(config.eval_dir, "predictions.json"), results)
    stats, summary = evaluate(coco, results)
    stats.update(images=len(paths) - skipped, skipped_images=skipped, seconds=round(seconds, 3))
    write_json(os.path.join(config.eval_dir, "stats.json"), stats)
    logger.info("\n=============coco eval result=========\n%s", summary)
    logger.info("images: %d, skipped: %d, %.2f s (%.2f images/s), results in %s", stats["images"], skipped,
                seconds, stats["images"] / max(seconds, 1e-9), config.eval_dir)
    return stats


def main() -> None:
    config = load_config(description=__doc__)
    setup_device(config)
    run_eval(config)


if __name__ == "__main__":
    run_cli(main)

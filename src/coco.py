"""COCO-format annotations and the pycocotools evaluation."""
import contextlib
import io
import json
import os
from typing import Any, Dict, List, Tuple

from src.errors import UserError

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def load_coco(ann_file: str):
    """A pycocotools COCO object; a missing or malformed file is a UserError."""
    from pycocotools.coco import COCO
    if not os.path.isfile(ann_file):
        raise UserError(f"annotation file not found: {ann_file}")
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"annotation file {ann_file} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "categories" not in data:
        raise UserError(f"annotation file {ann_file} is not COCO format (needs 'images' and 'categories')")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            coco.createIndex()
        except (KeyError, TypeError) as e:
            raise UserError(f"annotation file {ann_file} is malformed: missing field {e}") from None
    return coco


def category_ids(coco) -> List[int]:
    """COCO category ids in label order (sorted ids -> contiguous labels 0..C-1)."""
    return sorted(coco.getCatIds())


def evaluate(coco, results: List[Dict[str, Any]]) -> Tuple[Dict[str, float], str, Any]:
    """COCO bbox metrics, pycocotools' printed summary, and the evaluator (None without detections)."""
    from pycocotools.cocoeval import COCOeval
    if not results:
        return {k: 0.0 for k in STAT_KEYS}, "no detections", None
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    text = "\n".join(line for line in buf.getvalue().splitlines() if line.startswith(" Average"))
    return {k: float(v) for k, v in zip(STAT_KEYS, evaluator.stats)}, text, evaluator

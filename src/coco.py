"""COCO-format annotations and the pycocotools evaluation."""
import contextlib
import io
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

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


def coco_result(image_id: int, category_id: int, box: Sequence[float], score: float) -> Dict[str, Any]:
    """One COCO detection result as eval.py and postprocess.py write it: box (x, y, w, h) to 3 decimals,
    score to 5."""
    return {"image_id": int(image_id), "category_id": int(category_id), "bbox": [round(float(v), 3) for v in box],
            "score": round(float(score), 5)}


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


def _name_key(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def model_categories(config) -> Tuple[Optional[List[int]], Optional[List[str]]]:
    """The model's category id and name of each label: from train.py's checkpoint or the config (converted
    darknet weights: COCO's); either is None when it does not cover every label."""
    n = config.num_classes
    ids = [int(i) for i in config.coco_ids] if len(config.coco_ids) == n else None
    names = [str(x) for x in config.labels] if len(config.labels) == n else None
    return ids, names


def _describe(ids: Optional[Sequence[int]], names: Optional[Sequence[str]]) -> str:
    if ids and names:
        items = [f"{i} {x}" for i, x in zip(ids, names)]
    else:
        items = [str(v) for v in (ids or names or [])]
    text = ", ".join(items)
    return (text[:300] + " ...") if len(text) > 300 else (text or "none known")


def label_to_category(coco, ann_file: str, model_ids: Optional[Sequence[int]],
                      model_names: Optional[Sequence[str]]) -> Dict[int, int]:
    """label -> category id of the annotation file, for every category the file holds.

    A category maps by the model's category id, or by name (case, spaces and
    punctuation ignored) where the model has no ids or not that one. A category
    the model cannot map, or two on one label, is an error naming it.
    """
    by_id = {c: k for k, c in enumerate(model_ids or [])}
    by_name = {_name_key(x): k for k, x in enumerate(model_names or [])}
    labels: Dict[int, int] = {}
    for cat_id in sorted(coco.getCatIds()):
        name = coco.cats[cat_id].get("name", "")
        label = by_id.get(cat_id, by_name.get(_name_key(name)))
        if label is None:
            raise UserError(f"category {cat_id} '{name}' of {ann_file} is not one of the model's categories "
                            f"(by id or name): {_describe(model_ids, model_names)}")
        if label in labels:
            raise UserError(f"categories {labels[label]} and {cat_id} of {ann_file} both map to the model's "
                            f"label {label}")
        labels[label] = cat_id
    return labels


def per_class_stats(coco, evaluator) -> List[Dict[str, Any]]:
    """AP (IoU 0.50:0.95) and AP50 of each category, area all, 100 detections, from pycocotools' accumulated
    precision; None for a category without ground truths. Their mean is pycocotools' AP."""
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall thresholds, categories)
    rows = []
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k]
        valid = p > -1
        rows.append({"category_id": int(cat_id), "name": coco.cats[cat_id].get("name", str(cat_id)),
                     "instances": len(coco.getAnnIds(catIds=[cat_id], iscrowd=False)),
                     "AP": float(p[valid].mean()) if valid.any() else None,
                     "AP50": float(p[0][valid[0]].mean()) if valid[0].any() else None})
    return rows


def _cell(value: Optional[float]) -> str:
    return "     -" if value is None else f"{value:6.3f}"


def per_class_table(rows: List[Dict[str, Any]]) -> str:
    """The per-class rows as a text table with their mean."""
    width = max([len(r["name"]) for r in rows] + [4])
    lines = [f"{'id':>6}  {'name':<{width}}  {'instances':>9}  {'AP':>6}  {'AP50':>6}"]
    for r in rows:
        lines.append(f"{r['category_id']:>6}  {r['name']:<{width}}  {r['instances']:>9}  {_cell(r['AP'])}  "
                     f"{_cell(r['AP50'])}")
    scored = [r for r in rows if r["AP"] is not None]
    if scored:
        lines.append(f"{'':>6}  {'mean':<{width}}  {'':>9}  {_cell(float(np.mean([r['AP'] for r in scored])))}  "
                     f"{_cell(float(np.mean([r['AP50'] for r in scored])))}")
    return "\n".join(lines)

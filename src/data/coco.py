"""COCO-format annotations, how a model's labels map to a file's categories, and the COCO evaluation."""
import contextlib
import io
import json
import os
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from src.errors import UserError
from src.logger import get_logger

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


_LOGGED: Set[str] = set()


def _log_once(message: str) -> None:
    """Log `message` the first time only (eval during training maps the same file every epoch)."""
    if message not in _LOGGED:
        _LOGGED.add(message)
        get_logger().info(message)


def placeholder_categories(coco) -> List[int]:
    """Ids of categories that only group others, as Roboflow's COCO export writes its data set's name: no
    annotations, and named as the supercategory of another category."""
    children = Counter(str(cat.get("supercategory", "")) for cat in coco.cats.values())
    with_boxes = {a["category_id"] for a in coco.anns.values()}
    return sorted(c for c, cat in coco.cats.items() if c not in with_boxes
                  and children[str(cat.get("name", ""))] > int(cat.get("supercategory") == cat.get("name")))


def category_ids(coco) -> List[int]:
    """The file's real category ids in label order (sorted ids -> contiguous labels 0..C-1): every category
    but placeholder parents (placeholder_categories, logged once)."""
    dropped = placeholder_categories(coco)
    if dropped:
        _log_once("left out category " + ", ".join(f"{c} '{coco.cats[c].get('name', '')}'" for c in dropped)
                  + ": no boxes, the parent of the others (a labelling tool's placeholder)")
    return sorted(set(coco.getCatIds()) - set(dropped))


def coco_result(image_id: int, category_id: int, box: Sequence[float], score: float) -> Dict[str, Any]:
    """One COCO detection result as eval.py and postprocess.py write it: box (x, y, w, h) to 3 decimals,
    score to 5."""
    return {"image_id": int(image_id), "category_id": int(category_id), "bbox": [round(float(v), 3) for v in box],
            "score": round(float(score), 5)}


def evaluate(coco, results: List[Dict[str, Any]]) -> Tuple[Dict[str, float], str, Any]:
    """COCO bbox metrics of the file's real categories (category_ids), the summary lines as pycocotools prints
    them, and the evaluator (None without detections).

    Scored by faster-coco-eval's COCOeval_faster, pycocotools' COCOeval with its per-image matching and
    accumulation in C++: 5-8x faster on a val2017-size result file here (tools/coco_eval_speed.py), the
    same stats but for one ulp (tests/test_coco_eval.py)."""
    from faster_coco_eval import COCOeval_faster
    if not results:
        return {k: 0.0 for k in STAT_KEYS}, "no detections", None
    lines: List[str] = []
    with contextlib.redirect_stdout(io.StringIO()):
        detections = coco.loadRes(results)
    evaluator = COCOeval_faster(coco, detections, "bbox", print_function=lines.append)
    evaluator.params.catIds = category_ids(coco)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    text = "\n".join([line for line in lines if line.startswith(" Average")][:len(STAT_KEYS)])  # not AR50, AR75
    return {k: float(v) for k, v in zip(STAT_KEYS, evaluator.stats)}, text, evaluator


# darknet's coco.names (the config's labels) keeps four VOC names where COCO's annotation files have others
NAME_SYNONYMS = {"motorcycle": "motorbike", "airplane": "aeroplane", "couch": "sofa", "tv": "tvmonitor"}


def _name_key(name: str) -> str:
    """A category name compared case-, space- and punctuation-blind, COCO's and darknet's names as one."""
    key = "".join(ch for ch in str(name).lower() if ch.isalnum())
    return NAME_SYNONYMS.get(key, key)


def _describe(ids: Optional[Sequence[int]], names: Optional[Sequence[str]]) -> str:
    if ids and names:
        items = [f"{i} {x}" for i, x in zip(ids, names)]
    else:
        items = [str(v) for v in (ids or names or [])]
    text = ", ".join(items)
    return (text[:300] + " ...") if len(text) > 300 else (text or "none known")


def label_to_category(coco, ann_file: str, model_ids: Optional[Sequence[int]],
                      model_names: Optional[Sequence[str]]) -> Dict[int, int]:
    """label -> category id of the annotation file, for each of its real categories (category_ids).

    The name decides where the model has names and knows the category's (case,
    spaces, punctuation and darknet's VOC-style synonyms ignored); the id only
    where the model has no names or not that one: tools number their
    categories their own way (from 0, 1..N in their own order, with gaps),
    names mean the same everywhere. Categories whose id is another of the
    model's labels than their name's are logged once. A category the model
    cannot map, or two on one label, is an error naming it.
    """
    by_id = {c: k for k, c in enumerate(model_ids or [])}
    by_name = {_name_key(x): k for k, x in enumerate(model_names or [])}
    labels: Dict[int, int] = {}
    overruled = []
    for cat_id in category_ids(coco):
        name = coco.cats[cat_id].get("name", "")
        named, numbered = by_name.get(_name_key(name)), by_id.get(cat_id)
        label = numbered if named is None else named
        if label is None:
            raise UserError(f"category {cat_id} '{name}' of {ann_file} is not one of the model's categories "
                            f"(by name or id): {_describe(model_ids, model_names)}")
        if label in labels:
            raise UserError(f"categories {labels[label]} and {cat_id} of {ann_file} both map to the model's "
                            f"label {label}")
        if numbered is not None and named is not None and numbered != named:
            overruled.append(f"{cat_id} '{name}' (id {cat_id} is the model's '{model_names[numbered]}')")
        labels[label] = cat_id
    if overruled:
        _log_once(f"{ann_file}: {len(overruled)} categories matched by name where their id is another of the "
                  f"model's classes: {', '.join(overruled)}")
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

"""The one NMS: non-finite rows dropped, score filter, greedy per-class NMS and top-k over decoded rows."""
from typing import NamedTuple

import numpy as np

# The largest box area NMS takes: half the float32 range, so that the IoU's union of two areas is finite.
MAX_AREA = np.finfo(np.float32).max / 2


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int = 0) -> np.ndarray:
    """Greedy NMS on (x, y, w, h) boxes; indices kept, highest score first.

    A box is dropped when its IoU with a kept box exceeds `iou_threshold`
    (areas as w*h, like OpenCV's NMSBoxes). With `max_keep` it stops after
    that many boxes: the rest could never enter a top-`max_keep` selection.
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    areas = boxes[:, 2] * boxes[:, 3]
    keep = []
    while order.size and (not max_keep or len(keep) < max_keep):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return np.array(keep, np.int64)


class Selection(NamedTuple):
    """One image's detections in network pixels, and how many of its rows were not finite."""
    boxes: np.ndarray  # (K, 4) cx, cy, w, h
    scores: np.ndarray
    labels: np.ndarray
    nonfinite_rows: int


def select_detections(rows: np.ndarray, score_threshold: float, iou_threshold: float,
                      max_boxes: int) -> Selection:
    """Decoded rows (N, 5+C) of one image -> its detections after per-class NMS.

    Rows holding an infinity or NaN, or a box whose area exceeds MAX_AREA, are
    dropped first and counted as non-finite: exp() of a large raw w/h overflows
    float32 in an untrained or diverged model, and such a box can neither be
    compared in NMS nor written as JSON.
    score = objectness x class probability; every class above the threshold
    counts (a box may be reported for several classes), as darknet does.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(rows).all(1) & (rows[:, 2] * rows[:, 3] <= MAX_AREA)
    nonfinite_rows = int(finite.size - np.count_nonzero(finite))
    if nonfinite_rows:
        rows = rows[finite]
    scores_all = rows[:, 4:5] * rows[:, 5:]
    idx, labels = np.nonzero(scores_all > score_threshold)
    scores = scores_all[idx, labels]
    cxcywh = rows[idx, :4]
    xywh = np.stack([cxcywh[:, 0] - cxcywh[:, 2] / 2, cxcywh[:, 1] - cxcywh[:, 3] / 2,
                     cxcywh[:, 2], cxcywh[:, 3]], 1) if idx.size else np.zeros((0, 4), rows.dtype)
    keep = []
    for c in np.unique(labels):
        members = np.nonzero(labels == c)[0]
        keep.append(members[nms(xywh[members], scores[members], iou_threshold, max_boxes)])
    keep = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:max_boxes]
    return Selection(cxcywh[keep], scores[keep], labels[keep], nonfinite_rows)

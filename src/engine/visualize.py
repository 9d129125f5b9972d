"""Drawing labelled boxes on images."""
from typing import Sequence

import cv2
import numpy as np

from src.engine.detector import Detections


def class_color(label: int) -> tuple:
    """A stable, well-separated BGR colour per class."""
    hue = (label * 47) % 180
    hsv = np.uint8([[[hue, 220, 230]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_detections(img: np.ndarray, det: Detections, names: Sequence[str]) -> np.ndarray:
    """A copy of `img` with each box, its class name and score.

    Boxes are cut to the image first (the part outside would not show), so that one partly or
    wholly outside, however far, still draws; a box with an infinity or NaN is left out.
    """
    out = img.copy()
    h, w = img.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    scale = 0.4 + 0.2 * thick
    for box, score, label in zip(det.boxes, det.scores, det.labels):
        if not np.isfinite(box).all():
            continue
        x1, y1 = int(round(np.clip(box[0], 0, w - 1))), int(round(np.clip(box[1], 0, h - 1)))
        x2 = int(round(np.clip(box[0] + box[2], 0, w - 1)))
        y2 = int(round(np.clip(box[1] + box[3], 0, h - 1)))
        color = class_color(int(label))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
        text = f"{names[label]} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        tx = max(0, min(x1, w - tw))
        ty = max(y1, th + base)
        cv2.rectangle(out, (tx, ty - th - base), (tx + tw, ty), color, -1)
        cv2.putText(out, text, (tx, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out

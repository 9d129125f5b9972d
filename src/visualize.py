"""Drawing labelled boxes on images."""
from typing import Sequence

import cv2
import numpy as np

from src.detector import Detections


def class_color(label: int) -> tuple:
    """A stable, well-separated BGR colour per class."""
    hue = (label * 47) % 180
    hsv = np.uint8([[[hue, 220, 230]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_detections(img: np.ndarray, det: Detections, names: Sequence[str]) -> np.ndarray:
    """A copy of `img` with each box, its class name and score."""
    out = img.copy()
    thick = max(1, round(min(img.shape[:2]) / 300))
    for box, score, label in zip(det.boxes, det.scores, det.labels):
        x, y, w, h = (int(round(v)) for v in box)
        color = class_color(int(label))
        cv2.rectangle(out, (x, y), (x + w, y + h), color, thick)
        text = f"{names[label]} {score:.2f}"
        scale = 0.4 + 0.2 * thick
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = max(y, th + base)
        cv2.rectangle(out, (x, ty - th - base), (x + tw, ty), color, -1)
        cv2.putText(out, text, (x, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out

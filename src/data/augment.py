"""Box-aware training augmentation: darknet jitter (scale/aspect with crop or pad), flip, HSV, mosaic.

Boxes are (x1, y1, x2, y2) in pixels. Every function takes its own
np.random.Generator, so a sample's augmentation is reproducible from a seed.
"""
from typing import Sequence, Tuple

import cv2
import numpy as np

from src.data.transforms import PAD_VALUE, letterbox

MIN_BOX_PX = 2.0


def clip_boxes(boxes: np.ndarray, labels: np.ndarray, w: int, h: int) -> Tuple[np.ndarray, np.ndarray]:
    """Clip to the image and drop boxes left thinner than MIN_BOX_PX."""
    boxes = boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_PX) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_PX)
    return boxes[keep], labels[keep]


def place(img: np.ndarray, boxes: np.ndarray, size: int, nw: int, nh: int, dx: int, dy: int) -> Tuple[np.ndarray, np.ndarray]:
    """Resize `img` to nw x nh and put its top-left at (dx, dy) on a grey size x size canvas (crop or pad)."""
    h, w = img.shape[:2]
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    x0, y0 = max(dx, 0), max(dy, 0)
    x1, y1 = min(dx + nw, size), min(dy + nh, size)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = resized[y0 - dy:y1 - dy, x0 - dx:x1 - dx]
    out = boxes.astype(np.float32).copy()
    out[:, [0, 2]] = out[:, [0, 2]] * (nw / w) + dx
    out[:, [1, 3]] = out[:, [1, 3]] * (nh / h) + dy
    return canvas, out


def jitter(img: np.ndarray, boxes: np.ndarray, size: int, rng: np.random.Generator, amount: float,
           scale_range: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """darknet's load_data_detection: random aspect (+-amount) and scale, random position."""
    h, w = img.shape[:2]
    aspect = (w + rng.uniform(-amount, amount) * w) / (h + rng.uniform(-amount, amount) * h)
    scale = rng.uniform(scale_range[0], scale_range[1])
    if aspect < 1:
        nh = scale * size
        nw = nh * aspect
    else:
        nw = scale * size
        nh = nw / aspect
    nw, nh = max(1, int(nw)), max(1, int(nh))
    dx = int(rng.uniform(min(0, size - nw), max(0, size - nw)))
    dy = int(rng.uniform(min(0, size - nh), max(0, size - nh)))
    return place(img, boxes, size, nw, nh, dx, dy)


def hflip(img: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    w = img.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return img[:, ::-1].copy(), out


def hsv(img: np.ndarray, rng: np.random.Generator, hue: float, saturation: float, value: float) -> np.ndarray:
    """darknet's colour jitter: hue shift +-hue (fraction of the circle), saturation and value scaled
    by a factor in [1/s, s]."""
    def rand_scale(s: float) -> float:
        f = rng.uniform(1, s)
        return f if rng.random() < 0.5 else 1 / f
    dh, fs, fv = rng.uniform(-hue, hue) * 180, rand_scale(saturation), rand_scale(value)
    h, s, v = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    h = cv2.LUT(h, ((x + dh) % 180).astype(np.uint8))
    s = cv2.LUT(s, (x * fs).clip(0, 255).astype(np.uint8))
    v = cv2.LUT(v, (x * fv).clip(0, 255).astype(np.uint8))
    return cv2.cvtColor(cv2.merge((h, s, v)), cv2.COLOR_HSV2BGR)


def letterbox_boxes(img: np.ndarray, boxes: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """The eval letterbox, moving boxes along."""
    out, (sx, sy, dx, dy) = letterbox(img, size)
    b = boxes.astype(np.float32).copy()
    b[:, [0, 2]] = b[:, [0, 2]] * sx + dx
    b[:, [1, 3]] = b[:, [1, 3]] * sy + dy
    return out, b


def mosaic(samples: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]], size: int,
           rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four (image, boxes, labels) around a random centre of a 2*size canvas, scaled back to size."""
    big = 2 * size
    cx, cy = (int(rng.uniform(0.5 * size, 1.5 * size)) for _ in range(2))
    canvas = np.full((big, big, 3), PAD_VALUE, np.uint8)
    all_boxes, all_labels = [], []
    for k, (img, boxes, labels) in enumerate(samples[:4]):
        h, w = img.shape[:2]
        s = size / max(h, w)
        nw, nh = max(1, int(w * s)), max(1, int(h * s))
        dx = cx - nw if k in (0, 2) else cx
        dy = cy - nh if k in (0, 1) else cy
        tile, b = place(img, boxes, big, nw, nh, dx, dy)
        mask = np.zeros((big, big), bool)
        mask[max(dy, 0):max(dy + nh, 0), max(dx, 0):max(dx + nw, 0)] = True
        canvas[mask] = tile[mask]
        all_boxes.append(b)
        all_labels.append(labels)
    boxes = np.concatenate(all_boxes) * 0.5
    labels = np.concatenate(all_labels)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA), boxes, labels

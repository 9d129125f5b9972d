"""The one image-to-network preprocessing (letterbox or stretch) and its inverse for boxes."""
import os
import warnings
from typing import Optional, Tuple

import cv2
import numpy as np

PAD_VALUE = 127
# (scale_x, scale_y, dx, dy): network pixel = image pixel * scale + offset
Mapping = Tuple[float, float, int, int]


def letterbox(img: np.ndarray, size: int, pad_value: int = PAD_VALUE) -> Tuple[np.ndarray, Mapping]:
    """Resize keeping the aspect ratio, centred on a size x size grey canvas."""
    h, w = img.shape[:2]
    s = min(size / w, size / h)
    nw, nh = int(round(w * s)), int(round(h * s))
    dx, dy = (size - nw) // 2, (size - nh) // 2
    canvas = np.full((size, size, 3), pad_value, np.uint8)
    canvas[dy:dy + nh, dx:dx + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, (s, s, dx, dy)


def stretch(img: np.ndarray, size: int) -> Tuple[np.ndarray, Mapping]:
    h, w = img.shape[:2]
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR), (size / w, size / h, 0, 0)


def preprocess(img_bgr: np.ndarray, size: int, use_letterbox: bool) -> Tuple[np.ndarray, Mapping]:
    """BGR uint8 HWC image -> float32 RGB CHW in [0, 1] at size x size, and the box mapping."""
    resized, mapping = letterbox(img_bgr, size) if use_letterbox else stretch(img_bgr, size)
    chw = resized[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255.0)
    return chw, mapping


def boxes_to_image(cxcywh: np.ndarray, mapping: Mapping) -> np.ndarray:
    """Network-pixel (cx, cy, w, h) boxes -> image-pixel (x, y, w, h) boxes."""
    sx, sy, dx, dy = mapping
    out = np.empty_like(cxcywh)
    out[:, 0] = (cxcywh[:, 0] - cxcywh[:, 2] / 2 - dx) / sx
    out[:, 1] = (cxcywh[:, 1] - cxcywh[:, 3] / 2 - dy) / sy
    out[:, 2] = cxcywh[:, 2] / sx
    out[:, 3] = cxcywh[:, 3] / sy
    return out


def read_image(path: str) -> Optional[np.ndarray]:
    """The BGR image, or None (with a warning) when it is missing or unreadable."""
    img = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
    if img is None:
        warnings.warn(f"skipping unreadable or missing image {path}", stacklevel=2)
    return img

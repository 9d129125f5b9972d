"""A synthetic COCO-format data set: solid circles, squares and triangles on a choice of backgrounds.

For tests and a quick training demo:
    python -m src.synthetic --output_dir data/shapes --num_train 300 --num_val 100 --image_size 320
    python -m src.synthetic --output_dir data/plain --style plain --min_size 16 --max_size 160

Styles (the shapes and their placement are the same in each):
    textured  smoothed colour noise and 3-7 random lines (the default)
    plain     one colour with gentle low-frequency shading and at most two thin lines
"""
import argparse
import os
from typing import Dict, List, Tuple

import cv2
import numpy as np

from src.errors import ArgumentParser, UserError, run_cli
from src.fileio import write_json

CLASSES = ("circle", "square", "triangle")


def textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smoothed colour noise plus random lines: busy enough that shapes must be learned, not thresholded."""
    small = rng.integers(0, 256, (size // 16 + 1, size // 16 + 1, 3), dtype=np.uint8)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    img = cv2.add(img, rng.integers(0, 40, (size, size, 3), dtype=np.uint8))
    for _ in range(int(rng.integers(3, 8))):
        p1, p2 = (tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2))
        cv2.line(img, p1, p2, tuple(int(v) for v in rng.integers(0, 256, 3)), int(rng.integers(1, 4)))
    return img


def plain_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A near-uniform colour: shading that varies over a quarter of the image or more, few thin lines."""
    base = rng.integers(0, 256, 3).astype(np.float32)
    grid = size // 96 + 2
    shade = cv2.resize(rng.normal(0.0, 12.0, (grid, grid, 3)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    img = np.clip(base + shade, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 3))):
        p1, p2 = (tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2))
        cv2.line(img, p1, p2, tuple(int(v) for v in rng.integers(0, 256, 3)), 1, cv2.LINE_AA)
    return img


BACKGROUNDS = {"textured": textured_background, "plain": plain_background}


def draw_shape(img: np.ndarray, kind: int, cx: int, cy: int, s: int, color: Tuple[int, int, int]) -> List[float]:
    """Draw one shape of side/diameter s centred at (cx, cy); returns its COCO bbox [x, y, w, h]."""
    h = s // 2
    if kind == 0:
        cv2.circle(img, (cx, cy), h, color, -1, cv2.LINE_AA)
    elif kind == 1:
        cv2.rectangle(img, (cx - h, cy - h), (cx - h + s - 1, cy - h + s - 1), color, -1)
    else:
        pts = np.array([[cx, cy - h], [cx - h, cy - h + s - 1], [cx - h + s - 1, cy - h + s - 1]], np.int32)
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
    return [float(cx - h), float(cy - h), float(s), float(s)]


def make_image(rng: np.random.Generator, size: int, min_size: int, max_size: int,
               style: str = "textured") -> Tuple[np.ndarray, List]:
    """One image with 1-4 non-overlapping shapes of side min_size..max_size; returns it and [(class, bbox)]."""
    img = BACKGROUNDS[style](rng, size)
    objects: List[Tuple[int, List[float]]] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            s = int(rng.integers(min_size, max_size + 1))
            cx, cy = (int(rng.integers(s // 2, size - s // 2)) for _ in range(2))
            box = [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]
            if all(box[2] < b[0] or box[0] > b[0] + b[2] or box[3] < b[1] or box[1] > b[1] + b[3]
                   for _, b in objects):
                kind = int(rng.integers(len(CLASSES)))
                color = tuple(int(v) for v in rng.integers(0, 256, 3))
                objects.append((kind, draw_shape(img, kind, cx, cy, s, color)))
                break
    return img, objects


def make_split(root: str, split: str, count: int, size: int, rng: np.random.Generator,
               min_size: int, max_size: int, style: str) -> None:
    folder = os.path.join(root, split)
    os.makedirs(folder, exist_ok=True)
    images: List[Dict] = []
    annotations: List[Dict] = []
    for i in range(count):
        img, objects = make_image(rng, size, min_size, max_size, style)
        name = f"{i:06d}.jpg"
        cv2.imwrite(os.path.join(folder, name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for kind, bbox in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": kind + 1,
                                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
    write_json(os.path.join(root, "annotations", f"instances_{split}.json"), {
        "images": images, "annotations": annotations,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]})


def make_dataset(root: str, num_train: int, num_val: int, size: int = 320, seed: int = 0,
                 min_size: int = 28, max_size: int = 120, style: str = "textured") -> None:
    if style not in BACKGROUNDS:
        raise UserError(f"unknown style {style!r}; choose one of {', '.join(BACKGROUNDS)}")
    if not 2 <= min_size <= max_size < size:
        raise UserError(f"object sizes need 2 <= min_size <= max_size < image_size, got {min_size}, {max_size}, {size}")
    rng = np.random.default_rng(seed)
    make_split(root, "train2017", num_train, size, rng, min_size, max_size, style)
    make_split(root, "val2017", num_val, size, rng, min_size, max_size, style)


def main() -> None:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--num_train", type=int, default=300)
    p.add_argument("--num_val", type=int, default=100)
    p.add_argument("--image_size", type=int, default=320)
    p.add_argument("--min_size", type=int, default=28, help="smallest shape side in pixels")
    p.add_argument("--max_size", type=int, default=120, help="largest shape side in pixels")
    p.add_argument("--style", choices=tuple(BACKGROUNDS), default="textured", help="background style")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    make_dataset(a.output_dir, a.num_train, a.num_val, a.image_size, a.seed, a.min_size, a.max_size, a.style)
    print(f"wrote {a.num_train} train and {a.num_val} val {a.style} images to {a.output_dir}")


if __name__ == "__main__":
    run_cli(main)

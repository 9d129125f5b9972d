"""A synthetic COCO-format data set: solid circles, squares and triangles on a choice of backgrounds.

For tests and a quick training demo:
    python -m src.data.synthetic --output_dir data/shapes --num_train 300 --num_val 100 --image_size 320
    python -m src.data.synthetic --output_dir data/plain --style plain --min_size 16 --max_size 160

Styles (shapes of any colour, sides 28-120 px, unless said otherwise):
    textured     smoothed colour noise and 3-7 random lines (the default)
    plain        one colour with gentle low-frequency shading and at most two thin lines
    lowcontrast  one colour with strong low-frequency brightness shading, faint mottling and at most two
                 thin lines; each shape coloured 24-56 (RGB distance) from the background it covers;
                 sides 12-160 px
"""
import argparse
import os
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

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


def shaded_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A near-uniform colour under strong brightness shading (over a quarter of the image or more), a weaker
    shift of hue on the same scale, and faint mottling on a finer one."""
    base = rng.integers(0, 256, 3).astype(np.float32)
    coarse, fine = size // 96 + 2, size // 24 + 2
    fields = [rng.normal(0.0, 24.0, (coarse, coarse, 1)).repeat(3, axis=2), rng.normal(0.0, 8.0, (coarse, coarse, 3)),
              rng.normal(0.0, 5.0, (fine, fine, 3))]
    shade = sum(cv2.resize(f.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC) for f in fields)
    img = np.clip(base + shade, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 3))):
        p1, p2 = (tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2))
        cv2.line(img, p1, p2, tuple(int(v) for v in rng.integers(0, 256, 3)), int(rng.integers(1, 3)), cv2.LINE_AA)
    return img


Colour = Tuple[int, int, int]


def any_colour(rng: np.random.Generator, img: np.ndarray, box: List[int]) -> Colour:
    """A uniformly random colour, whatever lies under the shape."""
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def near_colour(rng: np.random.Generator, img: np.ndarray, box: List[int]) -> Colour:
    """A colour 24-56 away (RGB distance) from the mean of the background under box [x0, y0, x1, y1].

    The direction is random; where the clip to 0..255 would eat into the distance, the opposite one is used.
    """
    x0, y0, x1, y1 = box
    mean = img[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    step = rng.normal(size=3)
    step *= rng.uniform(24.0, 56.0) / np.linalg.norm(step)
    colour = np.clip(mean + step, 0, 255)
    if np.linalg.norm(colour - mean) < np.linalg.norm(step) - 1.0:
        colour = np.clip(mean - step, 0, 255)
    return tuple(int(round(v)) for v in colour)


class Style(NamedTuple):
    background: Callable[[np.random.Generator, int], np.ndarray]
    colour: Callable[[np.random.Generator, np.ndarray, List[int]], Colour]
    sizes: Tuple[int, int]


STYLES = {"textured": Style(textured_background, any_colour, (28, 120)),
          "plain": Style(plain_background, any_colour, (28, 120)),
          "lowcontrast": Style(shaded_background, near_colour, (12, 160))}


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
    look = STYLES[style]
    img = look.background(rng, size)
    objects: List[Tuple[int, List[float]]] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            s = int(rng.integers(min_size, max_size + 1))
            cx, cy = (int(rng.integers(s // 2, size - s // 2)) for _ in range(2))
            box = [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]
            if all(box[2] < b[0] or box[0] > b[0] + b[2] or box[3] < b[1] or box[1] > b[1] + b[3]
                   for _, b in objects):
                kind = int(rng.integers(len(CLASSES)))
                color = look.colour(rng, img, [cx - s // 2, cy - s // 2, cx - s // 2 + s, cy - s // 2 + s])
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
                 min_size: Optional[int] = None, max_size: Optional[int] = None, style: str = "textured") -> None:
    """Write train2017/ and val2017/ with their COCO annotations; sizes left None take the style's range."""
    if style not in STYLES:
        raise UserError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    min_size = STYLES[style].sizes[0] if min_size is None else min_size
    max_size = STYLES[style].sizes[1] if max_size is None else max_size
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
    p.add_argument("--min_size", type=int, help="smallest shape side in pixels (default: the style's, 28 or 12)")
    p.add_argument("--max_size", type=int, help="largest shape side in pixels (default: the style's, 120 or 160)")
    p.add_argument("--style", choices=tuple(STYLES), default="textured", help="background and shape colours")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    make_dataset(a.output_dir, a.num_train, a.num_val, a.image_size, a.seed, a.min_size, a.max_size, a.style)
    print(f"wrote {a.num_train} train and {a.num_val} val {a.style} images to {a.output_dir}")


if __name__ == "__main__":
    run_cli(main)

"""Small 3-class COCO-format sets whose category ids are not 1..3, in two styles, for fine-tuning tests and
the measurement in the README ("Train on your own data"):

- "shapes": src/data/synthetic.py's circles, squares and triangles on textured noise (28-120 px), with ids
  remapped to 7, 12, 40 and the categories listed in another order;
- "signs": a generator of its own: rings, crosses and diamonds, outlined or filled, on smooth gradients
  with stripes, mostly small (14-56 px), ids 40, 7, 12 (another class order), images 256x384.

    python tests/own_data.py OUT_DIR [--num_train 120 --num_val 60]
writes OUT_DIR/shapes and OUT_DIR/signs, each in COCO layout (annotations/, train2017/, val2017/).
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Tuple

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.data.synthetic import make_dataset  # noqa: E402
from src.fileio import write_json  # noqa: E402

SHAPE_IDS = {1: 7, 2: 12, 3: 40}
SIGN_CATEGORIES = [(40, "ring"), (7, "cross"), (12, "diamond")]


def remap_shapes(root: str, num_train: int, num_val: int, seed: int = 0) -> None:
    """src/data/synthetic.py's set with category ids 7, 12, 40, categories listed in reverse order."""
    make_dataset(root, num_train, num_val, size=320, seed=seed)
    for split in ("train2017", "val2017"):
        path = os.path.join(root, "annotations", f"instances_{split}.json")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        for a in data["annotations"]:
            a["category_id"] = SHAPE_IDS[a["category_id"]]
        data["categories"] = [dict(c, id=SHAPE_IDS[c["id"]]) for c in reversed(data["categories"])]
        write_json(path, data)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    img = np.broadcast_to(c0 * (1 - t) + c1 * t, (h, w, 3)).astype(np.uint8).copy()
    period = int(rng.integers(12, 40))
    for x in range(int(rng.integers(0, period)), w + h, period):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(img, (x, 0), (x - h, h), color, int(rng.integers(1, 3)), cv2.LINE_AA)
    return cv2.GaussianBlur(img, (3, 3), 0)


def _draw_sign(img: np.ndarray, kind: int, cx: int, cy: int, s: int, color, filled: bool) -> None:
    r = s // 2
    thick = -1 if filled else max(2, s // 7)
    if kind == 0:
        cv2.circle(img, (cx, cy), r, color, max(2, s // 6), cv2.LINE_AA)
    elif kind == 1:
        arm = max(2, s // 6)
        cv2.rectangle(img, (cx - r, cy - arm), (cx + r, cy + arm), color, -1)
        cv2.rectangle(img, (cx - arm, cy - r), (cx + arm, cy + r), color, -1)
    else:
        pts = np.array([[cx, cy - r], [cx + r, cy], [cx, cy + r], [cx - r, cy]], np.int32)
        if filled:
            cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
        else:
            cv2.polylines(img, [pts], True, color, thick, cv2.LINE_AA)


def make_signs(root: str, num_train: int, num_val: int, seed: int = 1, h: int = 256, w: int = 384) -> None:
    rng = np.random.default_rng(seed)
    for split, count in (("train2017", num_train), ("val2017", num_val)):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        images: List[Dict] = []
        annotations: List[Dict] = []
        for i in range(count):
            img = _background(rng, h, w)
            placed: List[Tuple[float, float, float, float]] = []
            for _ in range(int(rng.integers(1, 7))):
                s = int(rng.integers(14, 57))
                cx, cy = int(rng.integers(s // 2 + 1, w - s // 2 - 1)), int(rng.integers(s // 2 + 1, h - s // 2 - 1))
                box = (cx - s / 2, cy - s / 2, float(s), float(s))
                if any(abs(cx - (b[0] + b[2] / 2)) < (s + b[2]) / 2 and abs(cy - (b[1] + b[3] / 2)) < (s + b[3]) / 2
                       for b in placed):
                    continue
                kind = int(rng.integers(3))
                color = tuple(int(v) for v in rng.integers(0, 256, 3))
                _draw_sign(img, kind, cx, cy, s, color, bool(rng.random() < 0.5))
                placed.append(box)
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                    "category_id": SIGN_CATEGORIES[kind][0], "bbox": list(box),
                                    "area": box[2] * box[3], "iscrowd": 0})
            name = f"{i:06d}.jpg"
            cv2.imwrite(os.path.join(root, split, name), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        write_json(os.path.join(root, "annotations", f"instances_{split}.json"), {
            "images": images, "annotations": annotations,
            "categories": [{"id": c, "name": n} for c, n in SIGN_CATEGORIES]})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--num_train", type=int, default=120)
    p.add_argument("--num_val", type=int, default=60)
    a = p.parse_args()
    remap_shapes(os.path.join(a.out_dir, "shapes"), a.num_train, a.num_val)
    make_signs(os.path.join(a.out_dir, "signs"), a.num_train, a.num_val)
    print(f"wrote {a.out_dir}/shapes and {a.out_dir}/signs")


if __name__ == "__main__":
    main()

"""The darknet side of the parity tests: a network read by OpenCV's own darknet importer
(cv2.dnn.readNetFromDarknet), which shares no code with this project.

Runs in its own virtual environment (opencv-python-headless<5 and numpy only; OpenCV 5 dropped the
importer), so it imports nothing from the project.

  raw    --cfg C --weights W --blob B.npy --out O.npz
         the YOLO layers' outputs for an NCHW float blob, in cfg order: rows (cx, cy, w, h) relative to
         the input size, objectness, class scores (objectness x class probability, none zeroed)
  detect --cfg C --weights W --images DIR --size S --score T --nms N --json OUT
         detections on every .jpg in DIR, preprocessed as the demo does (letterbox: aspect ratio kept,
         resized with bilinear interpolation, centred on grey 127), scores above T, per-class NMS by
         OpenCV's NMSBoxes; records {file, bbox [x, y, w, h] in image pixels, score, class (0-based)}
"""
import argparse
import json
import os

import cv2
import numpy as np


def load(cfg: str, weights: str):
    """The network, with thresh=0 on each [yolo] section: OpenCV's importer otherwise zeroes the class
    scores below 0.2, a detection threshold that belongs to no raw output."""
    with open(cfg) as f:
        text = f.read().replace("[yolo]", "[yolo]\nthresh=0")
    net = cv2.dnn.readNetFromDarknet(np.frombuffer(text.encode(), np.uint8), np.fromfile(weights, np.uint8))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def forward(net, blob: np.ndarray) -> list:
    net.setInput(blob)
    return net.forward(net.getUnconnectedOutLayersNames())


def letterboxed(img: np.ndarray, size: int):
    h, w = img.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = int(round(w * scale)), int(round(h * scale))
    left, top = (size - nw) // 2, (size - nh) // 2
    canvas = np.full((size, size, 3), 127, np.uint8)
    canvas[top:top + nh, left:left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, scale, left, top


def detect(net, img: np.ndarray, size: int, score: float, nms: float) -> list:
    canvas, scale, left, top = letterboxed(img, size)
    blob = cv2.dnn.blobFromImage(canvas, 1 / 255.0, (size, size), swapRB=True, crop=False)
    rows = np.concatenate(forward(net, blob))
    boxes = np.stack([(rows[:, 0] - rows[:, 2] / 2) * size, (rows[:, 1] - rows[:, 3] / 2) * size,
                      rows[:, 2] * size, rows[:, 3] * size], 1)
    boxes = (boxes - [left, top, 0, 0]) / scale
    found = []
    for c in range(rows.shape[1] - 5):
        scores = rows[:, 5 + c]
        idx = np.nonzero(scores > score)[0]
        if not idx.size:
            continue
        keep = cv2.dnn.NMSBoxes(boxes[idx].tolist(), scores[idx].tolist(), score, nms)
        for k in np.asarray(keep).reshape(-1):
            i = idx[k]
            found.append({"bbox": [float(v) for v in boxes[i]], "score": float(scores[i]), "class": c})
    return sorted(found, key=lambda r: -r["score"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["raw", "detect"])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--blob")
    parser.add_argument("--out")
    parser.add_argument("--images")
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--score", type=float, default=0.3)
    parser.add_argument("--nms", type=float, default=0.45)
    parser.add_argument("--json")
    args = parser.parse_args()
    net = load(args.cfg, args.weights)
    if args.mode == "raw":
        np.savez(args.out, *forward(net, np.load(args.blob).astype(np.float32)))
        return
    records = []
    for name in sorted(f for f in os.listdir(args.images) if f.lower().endswith(".jpg")):
        img = cv2.imread(os.path.join(args.images, name), cv2.IMREAD_COLOR)
        records += [dict(file=name, **r) for r in detect(net, img, args.size, args.score, args.nms)]
    with open(args.json, "w") as f:
        json.dump(records, f)


if __name__ == "__main__":
    main()

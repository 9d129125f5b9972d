"""Charts as PNG, drawn with OpenCV (no plotting dependency): PR curves from eval, loss, lr and val AP
curves from train.py's metrics log.

    python -m src.engine.plots OUTPUTS/metrics_rank0.jsonl [--out_dir DIR]
"""
import argparse
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from src.errors import UserError, run_cli

Series = Dict[str, Tuple[Sequence[float], Sequence[float]]]
WIDTH, HEIGHT, MARGIN = 900, 560, 70
COLORS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
          (194, 119, 227), (127, 127, 127)]


def _ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def line_chart(series: Series, title: str, xlabel: str, ylabel: str, path: str, log_y: bool = False,
               fixed_range: Optional[Tuple[float, float, float, float]] = None) -> None:
    """One PNG with a line per series, axes with ticks, a legend; written atomically."""
    img = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    xs_all = np.concatenate([np.asarray(x, float) for x, _ in series.values()]) if series else np.zeros(1)
    ys_all = np.concatenate([np.asarray(y, float) for _, y in series.values()]) if series else np.zeros(1)
    if log_y:
        ys_all = np.log10(np.maximum(ys_all, 1e-12))
    x0, x1 = float(xs_all.min()), float(xs_all.max()) or 1.0
    y0, y1 = float(ys_all.min()), float(ys_all.max())
    if fixed_range:
        x0, x1, y0, y1 = fixed_range
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    left, right, top, bottom = MARGIN + 20, WIDTH - 30, MARGIN, HEIGHT - MARGIN

    def px(x, y):
        return (int(left + (x - x0) / (x1 - x0) * (right - left)), int(bottom - (y - y0) / (y1 - y0) * (bottom - top)))

    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.rectangle(img, (left, top), (right, bottom), (0, 0, 0), 1)
    for t in _ticks(x0, x1):
        p = px(t, y0)
        cv2.line(img, (p[0], bottom), (p[0], bottom + 5), (0, 0, 0), 1)
        cv2.putText(img, f"{t:.3g}", (p[0] - 15, bottom + 22), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for t in _ticks(y0, y1):
        p = px(x0, t)
        cv2.line(img, (left, p[1]), (right, p[1]), (230, 230, 230), 1)
        label = f"{10 ** t:.2g}" if log_y else f"{t:.3g}"
        cv2.putText(img, label, (5, p[1] + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 35), font, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(img, xlabel, ((left + right) // 2 - 30, HEIGHT - 20), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (5, top - 15), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for k, (name, (xs, ys)) in enumerate(series.items()):
        ys = np.log10(np.maximum(np.asarray(ys, float), 1e-12)) if log_y else np.asarray(ys, float)
        pts = np.array([px(x, y) for x, y in zip(xs, ys)], np.int32)
        color = COLORS[k % len(COLORS)]
        if len(pts) > 1:
            cv2.polylines(img, [pts], False, color, 2, cv2.LINE_AA)
        elif len(pts):
            cv2.circle(img, tuple(int(v) for v in pts[0]), 3, color, -1)
        ly = top + 20 + 20 * k
        cv2.line(img, (right - 230, ly - 5), (right - 205, ly - 5), color, 3)
        cv2.putText(img, name, (right - 198, ly), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp.png")
    cv2.imwrite(tmp, img)
    os.replace(tmp, path)


def pr_curves(precision: np.ndarray, recall_thresholds: np.ndarray, names: Sequence[str],
              counts: Sequence[int], path: str, top: int = 5) -> None:
    """Precision-recall at IoU 0.5 (pycocotools' eval['precision'][0, :, k, 0, -1]): the mean over
    classes and the `top` classes with most ground truths."""
    pr = precision[0, :, :, 0, -1]  # (recall thresholds, classes)
    valid = [k for k in range(pr.shape[1]) if (pr[:, k] >= 0).any()]
    series: Series = {}
    if valid:
        mean = np.stack([np.maximum(pr[:, k], 0) for k in valid], 1).mean(1)
        series[f"all classes (AP50 {mean.mean():.3f})"] = (recall_thresholds, mean)
    for k in sorted(valid, key=lambda k: -counts[k])[:top]:
        curve = np.maximum(pr[:, k], 0)
        series[f"{names[k]} ({counts[k]}, AP50 {curve.mean():.3f})"] = (recall_thresholds, curve)
    line_chart(series, "Precision-recall at IoU 0.5", "recall", "precision", path, fixed_range=(0, 1, 0, 1))


def read_metrics(path: str) -> List[dict]:
    if not os.path.isfile(path):
        raise UserError(f"metrics log not found: {path}")
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise UserError(f"{path} holds no metrics yet")
    return rows


def training_curves(metrics_path: str, out_dir: str) -> List[str]:
    """loss.png and lr.png from a metrics log, and val_ap.png where it holds eval during training (run_eval);
    returns the paths."""
    rows = read_metrics(metrics_path)
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "AP" in r]
    paths = []
    if train_rows:
        steps = [r["step"] for r in train_rows]
        loss_keys = [k for k in train_rows[0] if k == "loss" or k.endswith("_loss")]
        paths += [os.path.join(out_dir, "loss.png"), os.path.join(out_dir, "lr.png")]
        line_chart({k: (steps, [r[k] for r in train_rows]) for k in loss_keys}, "Training loss", "iteration",
                   "loss", paths[-2], log_y=True)
        line_chart({"lr": (steps, [r["lr"] for r in train_rows])}, "Learning rate", "iteration", "lr", paths[-1])
    if val_rows:
        epochs = [r["epoch"] + 1 for r in val_rows]
        paths.append(os.path.join(out_dir, "val_ap.png"))
        line_chart({k: (epochs, [r[k] for r in val_rows]) for k in ("AP", "AP50")}, "Val AP during training",
                   "epoch", "AP", paths[-1])
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics", help="metrics_rankN.jsonl written by train.py")
    p.add_argument("--out_dir", default="",
                   help="where to write loss.png, lr.png and val_ap.png (default: beside the log)")
    a = p.parse_args()
    for path in training_curves(a.metrics, a.out_dir or os.path.dirname(os.path.abspath(a.metrics))):
        print("wrote", path)


if __name__ == "__main__":
    run_cli(main)

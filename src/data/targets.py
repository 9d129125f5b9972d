"""YOLOv3 training targets, as the paper assigns them.

Each ground truth goes to the one anchor (over all scales) whose shape best
matches it (IoU of boxes sharing a centre), at the grid cell holding its
centre. Per scale the target is (H, W, A, 6 + C): cx, cy, w, h (fractions of
the input), objectness, box-loss weight 2 - w*h, then the class targets. The
list of ground truths (max_boxes, 4 + C) holds cx, cy, w, h and class targets.
"""
from typing import List, Sequence

import numpy as np


def shape_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(G, 2) box sizes vs (K, 2) anchor sizes -> (G, K) IoU as if centred together."""
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    return inter / (wh[:, None, 0] * wh[:, None, 1] + anchors[None, :, 0] * anchors[None, :, 1] - inter)


def build_targets(boxes: np.ndarray, labels: np.ndarray, size: int, anchors: Sequence[Sequence[float]],
                  anchor_mask: Sequence[Sequence[int]], num_classes: int, max_boxes: int,
                  label_smooth_factor: float = 0.0) -> List[np.ndarray]:
    """Per-scale targets (coarsest first) and the (max_boxes, 4 + C) list of ground truths (cx, cy, w, h,
    classes) for the loss's ignore mask and class_loss_on_ignored, from (x1, y1, x2, y2) pixel boxes at
    input size `size`."""
    anchors = np.asarray(anchors, np.float32)
    outs = []
    for mask in anchor_mask:
        stride = 32 // (2 ** len(outs))
        outs.append(np.zeros((size // stride, size // stride, len(mask), 6 + num_classes), np.float32))
    gts = np.zeros((max_boxes, 4 + num_classes), np.float32)
    if len(boxes):
        wh = boxes[:, 2:4] - boxes[:, 0:2]
        centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
        best = shape_iou(wh, anchors).argmax(1)
        cls = np.full((len(boxes), num_classes), label_smooth_factor / num_classes, np.float32)
        cls[np.arange(len(boxes)), labels] += 1 - label_smooth_factor
        for g in range(len(boxes)):
            for scale, mask in enumerate(anchor_mask):
                if best[g] not in mask:
                    continue
                grid = outs[scale].shape[0]
                gx = min(int(centre[g, 0] / size * grid), grid - 1)
                gy = min(int(centre[g, 1] / size * grid), grid - 1)
                norm = np.concatenate([centre[g], wh[g]]) / size
                a = list(mask).index(best[g])
                outs[scale][gy, gx, a, :4] = norm
                outs[scale][gy, gx, a, 4] = 1.0
                outs[scale][gy, gx, a, 5] = 2.0 - norm[2] * norm[3]
                outs[scale][gy, gx, a, 6:] = cls[g]
        n = min(len(boxes), max_boxes)
        gts[:n, :2] = centre[:n] / size
        gts[:n, 2:4] = wh[:n] / size
        gts[:n, 4:] = cls[:n]
    return outs + [gts]

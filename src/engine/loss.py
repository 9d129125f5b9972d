"""YOLOv3 loss: GIoU for boxes (weighted 2 - w*h), sigmoid cross-entropy for objectness and classes.

Predictions overlapping any ground truth by more than `ignore_threshold` get
no objectness loss (darknet's ignore_thresh). The paper trains classes only at
the assigned anchor; with `class_loss_on_ignored` those overlapping predictions
also learn the class of the ground truth they overlap most, so that every box
that can fire on an object names its class. The sum over the batch is divided
by the batch size.
"""
from typing import Sequence

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from src.models.spec import ModelSpec

EPS = 1e-9


def box_corners(box):
    """(..., 4) cx, cy, w, h -> x1, y1, x2, y2 (each (..., 1)).

    Columns are taken with ops.split: on CPU, strided slicing of the last axis
    is several times slower, forward and backward."""
    cx, cy, w, h = ops.split(box, 1, axis=-1)
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def giou(a, b):
    """Generalised IoU of (..., 4) cx, cy, w, h boxes -> (..., 1)."""
    ax1, ay1, ax2, ay2 = box_corners(a)
    bx1, by1, bx2, by2 = box_corners(b)
    iw = ops.relu(ops.minimum(ax2, bx2) - ops.maximum(ax1, bx1))
    ih = ops.relu(ops.minimum(ay2, by2) - ops.maximum(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    iou = inter / (union + EPS)
    hull = (ops.maximum(ax2, bx2) - ops.minimum(ax1, bx1)) * (ops.maximum(ay2, by2) - ops.minimum(ay1, by1))
    return iou - (hull - union) / (hull + EPS)


def total(x):
    """The sum of every element: the rows of its (first axis, rest) view, then the row sums. On the CPU
    MindSpore's ReduceSum over all axes of a large tensor is several times slower (docs/performance.md)."""
    if x.ndim < 2:
        return x.sum()
    return x.reshape(x.shape[0], -1).sum(1).sum()


def iou_matrix(pred, gts):
    """IoU of pred (N, R, 4) against gts (N, M, 4), both cx, cy, w, h -> (N, R, M).

    Each corner is tiled to (N, R, M) before any arithmetic: on the CPU, Minimum and Maximum that broadcast run
    several times slower than on equal shapes, tiling included (and splitting tiled boxes into corners was
    slower still)."""
    r, m = pred.shape[1], gts.shape[1]
    px1, py1, px2, py2 = [ops.tile(v, (1, 1, m)) for v in box_corners(pred)]
    gx1, gy1, gx2, gy2 = [ops.tile(v.reshape(v.shape[0], 1, m), (1, r, 1)) for v in box_corners(gts)]
    iw = ops.relu(ops.minimum(px2, gx2) - ops.maximum(px1, gx1))
    ih = ops.relu(ops.minimum(py2, gy2) - ops.maximum(py1, gy1))
    inter = iw * ih
    area_p = (px2 - px1) * (py2 - py1)
    area_g = (gx2 - gx1) * (gy2 - gy1)
    return inter / (area_p + area_g - inter + EPS)


class YoloLoss(nn.Cell):
    """Loss of one output scale, from raw maps, that scale's targets and the ground truths
    (N, M, 4 + C): cx, cy, w, h as fractions of the input, then the class targets."""

    def __init__(self, anchors: Sequence[Sequence[float]], num_classes: int, ignore_threshold: float,
                 class_loss_on_ignored: bool = False):
        super().__init__()
        self.num_anchors = len(anchors)
        self.num_classes = num_classes
        self.anchors = Tensor(np.array(anchors, np.float32).reshape(1, 1, 1, len(anchors), 2))
        self.ignore_threshold = ignore_threshold
        self.class_loss_on_ignored = class_loss_on_ignored
        self.bce = nn.BCEWithLogitsLoss(reduction="none")

    def construct(self, p, target, gts, in_h: int, in_w: int):
        n, _, h, w = p.shape
        # split into x, y, wh, objectness and classes while each is a block of whole maps (on the CPU, splitting
        # the last axis after the transpose took several times as long), then each to (n, h, w, anchor, values)
        parts = ops.split(p.reshape(n, self.num_anchors, 5 + self.num_classes, h, w), (1, 1, 2, 1, self.num_classes),
                          axis=2)
        tx, ty, twh, t_obj, t_cls = [part.transpose(0, 3, 4, 1, 2) for part in parts]
        gx = ops.arange(0, w, dtype=ms.float32).reshape(1, 1, w, 1, 1)
        gy = ops.arange(0, h, dtype=ms.float32).reshape(1, h, 1, 1, 1)
        gt_box, obj, weight, gt_cls = ops.split(target, (4, 1, 1, self.num_classes), axis=-1)
        size = Tensor([in_w, in_h], ms.float32)
        pred_box = ops.concat(((ops.sigmoid(tx) + gx) / w, (ops.sigmoid(ty) + gy) / h,
                               ops.exp(ops.clip(twh, -10.0, 10.0)) * self.anchors / size), -1)
        gt_boxes, gt_classes = ops.split(gts, (4, self.num_classes), axis=-1)
        ious = iou_matrix(ops.stop_gradient(pred_box).reshape(n, -1, 4), gt_boxes)
        best = ious.max(-1, keepdims=True)
        ignore = ops.cast(best < self.ignore_threshold, ms.float32).reshape(n, h, w, self.num_anchors, 1)
        obj_loss = self.bce(t_obj, obj) * (obj + (1 - obj) * ignore)
        if self.class_loss_on_ignored:
            # one BCE over both kinds of prediction (the assigned and the ignored ones never overlap): its
            # target is the assigned class, or the class of the ground truth an ignored prediction overlaps most
            nearest = ops.cast(ious >= best, ms.float32)
            nearest = nearest / nearest.sum(-1, keepdims=True)
            cls_near = ops.bmm(nearest, gt_classes).reshape(n, h, w, self.num_anchors, self.num_classes)
            near = (1 - obj) * (1 - ignore)
            cls_loss = self.bce(t_cls, gt_cls * obj + cls_near * near) * (obj + near)
        else:
            cls_loss = self.bce(t_cls, gt_cls) * obj
        box_loss = (1 - giou(pred_box, gt_box)) * weight * obj
        return ops.stack((total(box_loss), total(obj_loss), total(cls_loss))) / n


class YoloWithLoss(nn.Cell):
    """Network + per-scale losses: (images, target per scale..., gts) -> scalar loss.

    The last step's box, objectness and class losses (summed over scales) are
    kept in `parts`, for the training log.
    """

    def __init__(self, network: nn.Cell, anchors: Sequence[Sequence[float]], anchor_mask: Sequence[Sequence[int]],
                 num_classes: int, ignore_threshold: float, class_loss_on_ignored: bool = False):
        super().__init__()
        self.network = network
        self.losses = nn.CellList([YoloLoss([anchors[i] for i in m], num_classes, ignore_threshold,
                                            class_loss_on_ignored) for m in anchor_mask])
        self.parts = Parameter(Tensor(np.zeros(3, np.float32)), name="loss_parts", requires_grad=False)

    @classmethod
    def from_config(cls, network: nn.Cell, spec: ModelSpec, config) -> "YoloWithLoss":
        """The loss of `network` (built from `spec`) with the config's loss settings."""
        return cls(network, spec.anchor_scales, spec.anchor_mask, spec.num_classes, config.ignore_threshold,
                   config.class_loss_on_ignored)

    def construct(self, images, *targets):
        outs = self.network(images)
        gts = targets[-1]
        in_h, in_w = images.shape[2], images.shape[3]
        parts = self.losses[0](outs[0], targets[0], gts, in_h, in_w)
        for i in range(1, len(self.losses)):
            parts = parts + self.losses[i](outs[i], targets[i], gts, in_h, in_w)
        ops.assign(self.parts, ops.stop_gradient(parts))
        return parts.sum()

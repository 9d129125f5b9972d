"""The one box decode, shared by eval, predict and export.

Turns raw head maps (N, A*(5+C), H, W) into rows (N, sum H*W*A, 5+C): scales
in cfg order, rows ordered (y, x, anchor), columns cx, cy, w, h in input
pixels, sigmoid objectness, sigmoid class probabilities (YOLOv3 paper: sigmoid
offsets plus cell index, exp sizes times anchor priors, independent logistic
classes).
"""
from typing import Sequence

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops


class YoloDecode(nn.Cell):
    def __init__(self, anchors: Sequence[Sequence[float]], anchor_mask: Sequence[Sequence[int]], num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.num_anchors = tuple(len(m) for m in anchor_mask)
        self.anchors = tuple(Tensor(np.array([anchors[i] for i in m], np.float32).reshape(1, 1, 1, len(m), 2))
                             for m in anchor_mask)

    def decode_scale(self, p, anchors, num_anchors: int, in_h: int, in_w: int):
        n, _, h, w = p.shape
        p = p.reshape(n, num_anchors, 5 + self.num_classes, h, w).transpose(0, 3, 4, 1, 2)
        gx = ops.arange(0, w, dtype=ms.float32).reshape(1, 1, w, 1, 1)
        gy = ops.arange(0, h, dtype=ms.float32).reshape(1, h, 1, 1, 1)
        tx, ty, twh, rest = ops.split(p, (1, 1, 2, 1 + self.num_classes), axis=-1)
        cx = (ops.sigmoid(tx) + gx) * (in_w / w)
        cy = (ops.sigmoid(ty) + gy) * (in_h / h)
        out = ops.concat((cx, cy, ops.exp(twh) * anchors, ops.sigmoid(rest)), -1)
        return out.reshape(n, h * w * num_anchors, 5 + self.num_classes)

    def construct(self, outputs, in_h: int, in_w: int):
        rows = [self.decode_scale(outputs[i], self.anchors[i], self.num_anchors[i], in_h, in_w)
                for i in range(len(self.anchors))]
        return ops.concat(rows, 1)


class DetectionModel(nn.Cell):
    """Network + decode: a float32 RGB NCHW batch in [0, 1] in, one (N, rows, 5+C) tensor out."""

    def __init__(self, network: nn.Cell, decode: YoloDecode):
        super().__init__()
        self.network = network
        self.decode = decode

    def construct(self, x):
        return self.decode(self.network(x), x.shape[2], x.shape[3])

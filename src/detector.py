"""Building the inference model from a config and running it on images (eval and predict)."""
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import mindspore as ms
from mindspore import nn

from src.checkpoint import Weights, build_with_weights
from src.errors import UserError
from src.layers import fold_batchnorm, use_cpu_inference_kernels
from src.nms import select_detections
from src.transforms import Mapping, boxes_to_image, preprocess
from src.yolo import build_network
from src.yolo_head import DetectionModel, YoloDecode


@dataclass
class Detections:
    """One image's detections: boxes (x, y, w, h) in image pixels, scores, labels (0-based)."""
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def check_input_size(size: int) -> int:
    if size <= 0 or size % 32:
        raise UserError(f"input size must be a positive multiple of 32, got {size}")
    return size


def build_detection_model(config, weights: Optional[Weights]) -> nn.Cell:
    """Network + decode in inference mode, BN folded into the convs; weights from a .ckpt or darknet
    .weights or named parameters if given."""
    network = build_network(config) if weights is None else build_with_weights(config, weights, build_network)
    network.set_train(False)
    decode = YoloDecode(config.anchor_scales, config.anchor_mask, config.num_classes)
    model = DetectionModel(fold_batchnorm(network), decode)
    model.set_train(False)
    return model


class Detector:
    """Batched inference at a fixed input size; short batches are padded so the graph compiles once."""

    def __init__(self, config, weights: Weights, batch_size: int):
        self.size = check_input_size(config.testing_shape)
        self.letterbox = config.letterbox
        self.batch_size = max(1, batch_size)
        self.score_threshold = config.eval_ignore_threshold
        self.nms_threshold = config.nms_thresh
        self.max_boxes = config.max_boxes
        self.model = build_detection_model(config, weights)
        use_cpu_inference_kernels(self.model)

    def prepare(self, img_bgr: np.ndarray):
        return preprocess(img_bgr, self.size, self.letterbox)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n < self.batch_size:
            pad = np.zeros((self.batch_size - n,) + batch.shape[1:], batch.dtype)
            batch = np.concatenate([batch, pad])
        return self.model(ms.Tensor(batch)).asnumpy()[:n]

    def postprocess(self, rows: np.ndarray, mapping: Mapping,
                    score_threshold: Optional[float] = None) -> Detections:
        thr = self.score_threshold if score_threshold is None else score_threshold
        boxes, scores, labels = select_detections(rows, thr, self.nms_threshold, self.max_boxes)
        return Detections(boxes_to_image(boxes, mapping), scores, labels)

    def detect(self, images: Sequence[np.ndarray], score_threshold: Optional[float] = None) -> List[Detections]:
        prepared = [self.prepare(img) for img in images]
        rows = self.forward(np.stack([p[0] for p in prepared]))
        return [self.postprocess(r, p[1], score_threshold) for r, p in zip(rows, prepared)]

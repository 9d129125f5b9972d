"""Building the inference model from its weights (their card decides what it is) and running it on images (eval,
predict, export)."""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import mindspore as ms
from mindspore import nn

from src.cpu.routing import use_cpu_inference_kernels
from src.data.transforms import Mapping, boxes_to_image, preprocess
from src.engine.nms import select_detections
from src.errors import UserError
from src.formats.checkpoint import load_checkpoint_into, model_weights, network_parameters, state_checksum
from src.formats.darknet_weights import DarknetFile, load_darknet_weights
from src.formats.model_card import ModelCard, card_of_config, open_weights, resolve
from src.logger import get_logger
from src.models.layers import fold_batchnorm
from src.models.yolo import build_network
from src.models.yolo_head import DetectionModel, YoloDecode


@dataclass(frozen=True)
class LiveWeights:
    """A model in memory (e.g. the network being trained): its card and its named parameters."""
    card: ModelCard
    params: Dict[str, Any]


Weights = Union[str, LiveWeights]  # a .ckpt or darknet .weights path, or a model in memory


@dataclass
class Detections:
    """One image's detections: boxes (x, y, w, h) in image pixels, scores, labels (0-based)."""
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def clip_to_image(xywh: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
    """(x, y, w, h) boxes cut to the (height, width) image, as darknet's COCO writer (print_cocos) does;
    a box wholly outside becomes an empty one on the border."""
    h, w = image_size
    x1 = np.clip(xywh[:, 0], 0, w)
    y1 = np.clip(xywh[:, 1], 0, h)
    x2 = np.clip(xywh[:, 0] + xywh[:, 2], 0, w)
    y2 = np.clip(xywh[:, 1] + xywh[:, 3], 0, h)
    return np.stack([x1, y1, x2 - x1, y2 - y1], 1).astype(xywh.dtype, copy=False)


def check_input_size(size: int) -> int:
    if size <= 0 or size % 32:
        raise UserError(f"input size must be a positive multiple of 32, got {size}")
    return size


def build_with_weights(config, weights: Weights, checksum: bool = False) -> Tuple[ModelCard, nn.Cell]:
    """The model's card and its network with a whole model loaded from a .ckpt or darknet .weights file (read
    once; its card and the config decide the card: model_card.resolve), or from a model in memory. Of a
    checkpoint holding averaged weights (`ema`), those are the model. `checksum`: the card's weights_checksum
    computed from the weights loaded (for an export)."""
    if isinstance(weights, LiveWeights):
        network = build_network(weights.card.spec)
        load_checkpoint_into(network, "(the network being trained)", weights.card.spec.model_name,
                             ckpt=weights.params)
        return weights.card, network
    if not weights:
        raise UserError("no weights given (--pretrained / --ckpt_file)")
    if weights.endswith((".onnx", ".mindir", ".air")):
        raise UserError(f"{weights} is an exported graph, not weights: eval.py and predict.py take it as "
                        f"--onnx_file (ONNX)")
    stored, content = open_weights(weights)
    card = resolve(config, stored, get_logger())
    network = build_network(card.spec)
    if isinstance(content, DarknetFile):
        load_darknet_weights(network, content, card.spec.model_name, allow_prefix=False)
    else:
        load_checkpoint_into(network, weights, card.spec.model_name, ckpt=model_weights(content))
    if checksum:
        card = card.with_checksum(state_checksum(network_parameters(network)))
    return card, network


def build_detection_model(config, weights: Optional[Weights], checksum: bool = False) -> Tuple[ModelCard, nn.Cell]:
    """The model's card, and its network + decode in inference mode, BN folded into the convs; weights from a
    .ckpt or darknet .weights or a model in memory if given (their card), else the config's new model."""
    if weights is None:
        card = card_of_config(config)
        network = build_network(card.spec)
    else:
        card, network = build_with_weights(config, weights, checksum)
    spec = card.spec
    network.set_train(False)
    decode = YoloDecode(spec.anchor_scales, spec.anchor_mask, spec.num_classes)
    model = DetectionModel(fold_batchnorm(network), decode)
    model.set_train(False)
    return card, model


class Detector:
    """Batched inference at a fixed input size; short batches are padded so the graph compiles once.

    Boxes come out clipped to the image; non-finite rows (select_detections) are left out and counted
    in `nonfinite_rows` (log_nonfinite reports the count).
    """

    def __init__(self, config, weights: Weights, batch_size: int):
        self.batch_size = max(1, batch_size)
        self.score_threshold = config.eval_ignore_threshold
        self.nms_threshold = config.nms_thresh
        self.max_boxes = config.max_boxes
        self.card, self.model = self.load_model(config, weights)
        self.spec = self.card.spec
        self.size = check_input_size(self.card.input_size)
        self.letterbox = self.card.letterbox
        self.nonfinite_rows = 0

    def load_model(self, config, weights: Weights) -> Tuple[ModelCard, Any]:
        """The model's card (its input size and letterbox are the detector's) and the model `forward` runs
        (subclasses run other engines on the same pre- and post-processing)."""
        card, model = build_detection_model(config, weights)
        use_cpu_inference_kernels(model)
        return card, model

    def prepare(self, img_bgr: np.ndarray) -> Tuple[np.ndarray, Mapping, Tuple[int, int]]:
        """The network input, its box mapping and the image's (height, width)."""
        return preprocess(img_bgr, self.size, self.letterbox) + (img_bgr.shape[:2],)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n < self.batch_size:
            pad = np.zeros((self.batch_size - n,) + batch.shape[1:], batch.dtype)
            batch = np.concatenate([batch, pad])
        return self.run(batch)[:n]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's rows for a full batch."""
        return self.model(ms.Tensor(batch)).asnumpy()

    def postprocess(self, rows: np.ndarray, mapping: Mapping, image_size: Tuple[int, int],
                    score_threshold: Optional[float] = None) -> Detections:
        thr = self.score_threshold if score_threshold is None else score_threshold
        selected = select_detections(rows, thr, self.nms_threshold, self.max_boxes)
        self.nonfinite_rows += selected.nonfinite_rows
        boxes = clip_to_image(boxes_to_image(selected.boxes, mapping), image_size)
        return Detections(boxes, selected.scores, selected.labels)

    def detect(self, images: Sequence[np.ndarray], score_threshold: Optional[float] = None) -> List[Detections]:
        prepared = [self.prepare(img) for img in images]
        rows = self.forward(np.stack([p[0] for p in prepared]))
        return [self.postprocess(r, p[1], p[2], score_threshold) for r, p in zip(rows, prepared)]

    def log_nonfinite(self) -> None:
        """The run's one line on the rows dropped as non-finite (a warning when there were any)."""
        if self.nonfinite_rows:
            get_logger().warning("non-finite rows dropped before NMS: %d (a box or score with inf/NaN, or a box "
                                 "too large to compare: untrained or diverged weights?)", self.nonfinite_rows)
        else:
            get_logger().info("non-finite rows dropped before NMS: 0")

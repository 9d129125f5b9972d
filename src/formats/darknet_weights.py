"""Reading darknet .weights files into a network (layer order from `darknet_layers()`).

Layout, as darknet writes it: int32 major, minor, revision; images seen as
uint64 (uint32 before format 0.2); then for every [convolutional] in cfg order
BN beta, gamma, rolling mean, rolling variance (or the conv bias when it has no
BN), then the weights (out, in, k, k), all float32.
"""
import os
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
from mindspore import Tensor, nn
from tqdm import tqdm

from src.errors import UserError
from src.models.layers import HeadConv
from src.models.spec import ModelSpec
from src.models.yolo import build_network


def layer_sizes(layers) -> List[int]:
    """Floats each (conv, bn) layer takes in a .weights file: BN's four vectors (or the bias), then the weights."""
    sizes = []
    for conv, bn in layers:
        out_ch = conv.weight.shape[0]
        sizes.append(int(np.prod(conv.weight.shape)) + (4 * out_ch if bn is not None else out_ch))
    return sizes


def header_size(major: int, minor: int) -> int:
    """Bytes of a .weights header: version (3 x int32), then the images seen, int64 from version 0.2 on."""
    return 12 + (8 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 4)


class DarknetFile(NamedTuple):
    """A .weights file as read: its path, (major, minor, revision) header and float32 payload."""
    path: str
    header: Tuple[int, int, int]
    data: np.ndarray


def read_weights_file(path: str) -> DarknetFile:
    """The file read once: its header and float32 payload."""
    if not os.path.isfile(path):
        raise UserError(f"weights file not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 16:
        raise UserError(f"{path} is too short ({len(raw)} bytes) to be a darknet .weights file")
    major, minor, revision = (int(v) for v in np.frombuffer(raw[:12], np.int32))
    payload = raw[header_size(major, minor):]
    if len(payload) % 4:
        raise UserError(f"{path}: {len(payload)} bytes after the header is not a whole number of float32 values")
    return DarknetFile(path, (major, minor, revision), np.frombuffer(payload, np.float32))


def load_darknet_weights(network: nn.Cell, weights: DarknetFile, model_name: str, allow_prefix: bool = True) -> int:
    """Copy darknet weights into `network`; returns how many conv layers the file covered.

    A file may cover only the first layers (e.g. darknet53.conv.74, the backbone)
    if `allow_prefix`; any other size is an error stating expected and actual sizes.
    """
    layers = network.darknet_layers()
    sizes = layer_sizes(layers)
    path, header, data = weights
    header_bytes = header_size(header[0], header[1])
    bounds = np.cumsum([0] + sizes)
    full_bytes = header_bytes + 4 * int(bounds[-1])
    matches = np.nonzero(bounds == data.size)[0]
    if data.size == 0 or not len(matches) or (not allow_prefix and matches[0] != len(layers)):
        actual = header_bytes + 4 * data.size
        raise UserError(f"{path} does not fit {model_name} (num_classes and anchors as configured): "
                        f"expected {full_bytes} bytes for all {len(layers)} conv layers"
                        f"{' or a prefix ending at a layer boundary' if allow_prefix else ''}, got {actual} bytes")
    count = int(matches[0])
    offset = 0
    for conv, bn in tqdm(layers[:count], desc="convert", disable=not sys.stderr.isatty()):
        out_ch = conv.weight.shape[0]
        vectors = []
        for _ in range(4 if bn is not None else 1):
            vectors.append(data[offset:offset + out_ch])
            offset += out_ch
        n = int(np.prod(conv.weight.shape))
        conv.weight.set_data(Tensor(data[offset:offset + n].reshape(conv.weight.shape).copy()))
        offset += n
        if bn is None:
            conv.bias.set_data(Tensor(vectors[0].copy()))
        else:
            beta, gamma, mean, var = vectors
            bn.beta.set_data(Tensor(beta.copy()))
            bn.gamma.set_data(Tensor(gamma.copy()))
            bn.moving_mean.set_data(Tensor(mean.copy()))
            bn.moving_variance.set_data(Tensor(var.copy()))
    return count


def file_classes(network: nn.Cell, data: np.ndarray, num_classes: int) -> Optional[int]:
    """The class count a whole-model darknet .weights file was trained for, from its size (None if no count fits).

    Only the heads' output convs, A * (5 + C) filters of `in` inputs plus a bias each, depend on C.
    """
    heads = [cell.conv for _, cell in network.cells_and_names() if isinstance(cell, HeadConv)]
    per_class = sum(c.weight.shape[0] // (5 + num_classes) * (c.weight.shape[1] + 1) for c in heads)
    extra = data.size - sum(layer_sizes(network.darknet_layers()))
    if per_class == 0 or extra % per_class or num_classes + extra // per_class < 1:
        return None
    return num_classes + extra // per_class


def load_darknet_for_finetuning(network: nn.Cell, weights: DarknetFile, spec: ModelSpec, whole_model: bool
                                ) -> Tuple[int, Optional[Dict[str, Any]]]:
    """A darknet file as a fine-tuning start for `network` (built from `spec`): loaded into it when it fits layer
    for layer, (conv layers loaded, None); a whole model of another class count, (0, its parameters by name, as a
    network of that count holds them), for the caller to load what fits. Any other size is an error."""
    try:
        return load_darknet_weights(network, weights, spec.model_name, allow_prefix=not whole_model), None
    except UserError as first_error:
        classes = file_classes(network, weights.data, spec.num_classes)
        if classes is None or classes == spec.num_classes:
            raise first_error from None
    file_network = build_network(spec.replace(num_classes=classes))
    load_darknet_weights(file_network, weights, spec.model_name, allow_prefix=False)
    return 0, dict(file_network.parameters_and_names())

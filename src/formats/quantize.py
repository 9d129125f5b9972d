"""INT8 export: a statically quantised copy (QDQ, ONNX Runtime's quantisation tools) of an exported ONNX graph,
calibrated on the user's images preprocessed as eval does.

Only the network up to the heads is quantised: the heads' output convolutions, the box decode (sigmoid, exp,
anchors) and the concat of pixel boxes with probabilities stay float32, so one int8 scale never has to cover
box sizes of hundreds of pixels and probabilities in [0, 1] at once. Weights are int8 per output channel
(opset 13), activations uint8 (the u8 x s8 products VNNI and AMX-INT8 run), their ranges the 99.999th
percentile of the calibration activations (closer to float than min/max on coco_tiny: docs/deployment.md).
"""
import os
from typing import Dict, Iterator, List, Optional, Set

import numpy as np

from src.data.convert_labels import IMAGE_EXTS
from src.errors import UserError
from src.fileio import atomic_path, temp_path_beside
from src.data.transforms import preprocess, read_image

OPSET = 13  # per-channel QuantizeLinear / DequantizeLinear need 13; the export writes 11
# Images whose activations the calibrator holds at once (CalibStridedMinMax, which any calibrator honours).
CALIBRATION_CHUNK = 8


def calibration_images(folder: str, count: int) -> List[str]:
    """The first `count` images of `folder` by name; a UserError when there is none or the folder is missing."""
    if count < 1:
        raise UserError(f"calibration_images must be at least 1, got {count}")
    if not folder:
        raise UserError("--quantize int8 needs --calibration_dir DIR (images like the deployment's)")
    if not os.path.isdir(folder):
        raise UserError(f"calibration_dir not found: {folder}")
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS))
    if not names:
        raise UserError(f"no images ({', '.join(IMAGE_EXTS)}) in calibration_dir {folder}")
    return [os.path.join(folder, f) for f in names[:count]]


class CalibrationBatches:
    """onnxruntime's CalibrationDataReader: the images as eval feeds them, in batches of the graph's size (the
    last one filled up from the first images). It takes ranges of batches (set_range), so that the calibrator
    folds each batch into its histograms and drops it: otherwise it holds every activation of every image at
    once (gigabytes for a hundred images)."""

    def __init__(self, paths: List[str], size: int, batch: int, letterbox: bool):
        images = [img for img in map(read_image, paths) if img is not None]
        if not images:
            raise UserError(f"none of the {len(paths)} calibration images could be read")
        blobs = [preprocess(img, size, letterbox)[0] for img in images]
        blobs += [blobs[i % len(blobs)] for i in range((-len(blobs)) % batch)]
        self.batches = [np.stack(blobs[i:i + batch]) for i in range(0, len(blobs), batch)]
        self.window: Iterator = iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.window = iter(self.batches[start_index:end_index])

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        batch = next(self.window, None)
        return None if batch is None else {"images": batch}


def float_tail(graph) -> Set[str]:
    """Names of the nodes from the last convolutions (the heads' outputs) to the graph's output: the decode."""
    producer = {out: node for node in graph.node for out in node.output}
    tail, todo = set(), [o.name for o in graph.output]
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in tail:
            continue
        tail.add(node.name)
        if node.op_type != "Conv":
            todo += list(node.input)
    return tail


def fuse_leaky_relu(graph) -> None:
    """Max(x, Mul(a, x)) with a constant 0 < a < 1, the exported leaky ReLU, becomes one LeakyRelu (exact): a
    quantised LeakyRelu runs as a table in int8, a Mul and a Max would each dequantise and quantise again."""
    from onnx import helper, numpy_helper
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    producer = {out: node for node in graph.node for out in node.output}
    nodes = list(graph.node)
    for k, node in enumerate(nodes):
        if node.op_type != "Max" or len(node.input) != 2:
            continue
        for mul_out, x in (node.input, node.input[::-1]):
            mul = producer.get(mul_out)
            if mul is None or mul.op_type != "Mul" or x not in mul.input:
                continue
            alpha = consts.get(mul.input[1] if mul.input[0] == x else mul.input[0])
            if alpha is not None and alpha.size == 1 and 0 < float(alpha.reshape(())) < 1:
                nodes[k] = helper.make_node("LeakyRelu", [x], list(node.output), name=node.name,
                                            alpha=float(alpha.reshape(())))
                break
    used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    keep = [n for n in nodes if n.op_type not in ("Mul", "Constant") or any(o in used for o in n.output)]
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    constants = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(constants)


def keep_metadata(source, path: str) -> None:
    """Give the graph at `path` the metadata_props of `source` (the fp32 graph's model card)."""
    import onnx
    quantised = onnx.load(path)
    keys = {p.key for p in source.metadata_props}
    kept = [p for p in quantised.metadata_props if p.key not in keys]
    del quantised.metadata_props[:]
    quantised.metadata_props.extend(kept + list(source.metadata_props))
    onnx.save(quantised, path)


def quantize_int8(fp32_path: str, target: str, images: List[str], size: int, batch: int, letterbox: bool) -> str:
    """Write the int8 (QDQ) graph of the exported `fp32_path` to `target` atomically, with its metadata (the
    model card); returns `target`."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    model = onnx.load(fp32_path)
    if model.opset_import[0].version < OPSET:
        model = version_converter.convert_version(model, OPSET)
    fuse_leaky_relu(model.graph)
    for k, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{k}"
    tail = float_tail(model.graph)
    body = [n.name for n in model.graph.node if n.name not in tail]
    reader = CalibrationBatches(images, size, batch, letterbox)
    # batches per calibration step: at most CALIBRATION_CHUNK images, a divisor of the number of batches
    stride = max(d for d in range(1, max(1, CALIBRATION_CHUNK // batch) + 1) if len(reader) % d == 0)
    prepared = temp_path_beside(target, ".onnx")
    try:
        onnx.save(model, prepared)
        with atomic_path(target, ".onnx") as written:
            try:
                quantize_static(prepared, written, reader,
                                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, nodes_to_quantize=body,
                                calibrate_method=CalibrationMethod.Percentile,
                                extra_options={"CalibStridedMinMax": stride})
            except ValueError as e:  # numpy's histogram of an inf or NaN activation
                if "finite" not in str(e):
                    raise
                raise UserError(f"cannot calibrate {fp32_path}: its activations on the calibration images are not "
                                f"finite (untrained or diverged weights?)") from None
            keep_metadata(model, written)
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)
    return target

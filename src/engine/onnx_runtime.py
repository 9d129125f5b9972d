"""Exported ONNX graphs (fp32 or int8) in ONNX Runtime or OpenVINO, behind eval's Detector: the same
preprocessing, selection and COCO scoring as the MindSpore model, so a deployed graph's AP is one command.

The graph must follow the export contract (docs/deployment.md): input `images` [B, 3, S, S], output
`detections` [B, N, 5 + C]; B and S come from the file.
"""
import io
from typing import Any, Callable, List, NamedTuple, Tuple

import numpy as np

from src.engine.detector import Detector
from src.errors import UserError
from src.formats.model_card import ModelCard, open_weights, resolve

RUNTIMES = ("onnxruntime", "openvino")
OPENVINO_MISSING = ("--runtime openvino needs OpenVINO, an optional extra: pip install 'openvino>=2026.1,<2027' "
                    "(requirements-dev.txt has it)")
Session = Callable[[np.ndarray], np.ndarray]


class GraphShape(NamedTuple):
    """An exported graph's batch size, input size and output columns (5 + classes)."""
    batch: int
    size: int
    columns: int


def _dims(value_info) -> List[int]:
    """A graph input's or output's dimensions (0 where not a fixed number)."""
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def graph_shape(model, path: str) -> GraphShape:
    """The shape of an exported detections graph (an onnx.ModelProto); a UserError when it is not one."""
    constants = {t.name for t in model.graph.initializer}
    inputs = {i.name: _dims(i) for i in model.graph.input if i.name not in constants}
    outputs = {o.name: _dims(o) for o in model.graph.output}
    found = f"inputs {inputs or 'none'}, outputs {outputs or 'none'}"
    shape_in, shape_out = inputs.get("images", []), outputs.get("detections", [])
    if (len(inputs) != 1 or len(shape_in) != 4 or len(shape_out) != 3 or min(shape_in + shape_out) < 1
            or shape_in[1] != 3 or shape_in[2] != shape_in[3] or shape_out[0] != shape_in[0] or shape_out[2] < 6):
        raise UserError(f"{path} is not an exported detections graph (want input 'images' [B, 3, S, S] and output "
                        f"'detections' [B, N, 5 + C] of fixed sizes; got {found})")
    return GraphShape(shape_in[0], shape_in[2], shape_out[2])


def onnxruntime_session(model, threads: int = 0) -> Session:
    """The graph (an onnx.ModelProto, or a path) in ONNX Runtime's CPU provider (threads 0: its default, one per
    core)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    source = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(["detections"], {"images": x})[0]


def openvino_session(model, precision: str = "f32") -> Session:
    """The graph (an onnx.ModelProto, or a path) in OpenVINO's CPU plugin at an inference precision (`f32`;
    `bf16` where the CPU has it); an int8 (QDQ) graph runs its quantised parts in int8 whatever the hint."""
    try:
        import openvino as ov
    except ImportError:
        raise UserError(OPENVINO_MISSING) from None
    core = ov.Core()
    graph = model if isinstance(model, str) else core.read_model(io.BytesIO(model.SerializeToString()))
    compiled = core.compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()
    output = compiled.output("detections")
    return lambda x: request.infer({"images": x})[output]


def inference_session(model, runtime: str) -> Session:
    if runtime == "openvino":
        return openvino_session(model)
    return onnxruntime_session(model)


class GraphDetector(Detector):
    """Detector whose forward is an exported ONNX graph in `runtime` (fp32 in OpenVINO too)."""

    def __init__(self, config, card: ModelCard, model, runtime: str, batch_size: int):
        self.graph = (card, model)
        self.runtime = runtime
        super().__init__(config, "", batch_size)

    def load_model(self, config, weights: Any) -> Tuple[ModelCard, Session]:
        """The graph's card (resolved by graph_detector) and its session."""
        card, model = self.graph
        return card, inference_session(model, self.runtime)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.model(np.ascontiguousarray(batch, np.float32))


def graph_detector(config, logger) -> GraphDetector:
    """The detector for config.onnx_file, read once: everything from its card (an ONNX file exported before the
    card: the config's classes and anchors), the batch and input size and class count from the graph; a value
    the user gives that contradicts them is an error naming both."""
    path = config.onnx_file
    stored, model = open_weights(path)
    shape = graph_shape(model, path)
    graph = f"{path}'s graph"
    found = {"testing_shape": (shape.size, graph), "num_classes": (shape.columns - 5, graph)}
    for key, (value, _) in found.items():
        if key in stored.values and stored.values[key] != value:
            raise UserError(f"{path} is inconsistent: its card says {key} {stored.values[key]}, its graph has "
                            f"{value}")
    if config.per_batch_size != shape.batch and config.is_set("per_batch_size"):
        raise UserError(f"per_batch_size {config.per_batch_size} ({config.source('per_batch_size')}) contradicts "
                        f"{graph}: per_batch_size {shape.batch}")
    card = resolve(config, stored, logger, found, strict=True)
    logger.info("ONNX graph %s: batch %d, %dx%d, %d classes, in %s, %s", path, shape.batch, shape.size,
                shape.size, shape.columns - 5, config.runtime, "letterbox" if card.letterbox else "stretch")
    return GraphDetector(config, card, model, config.runtime, shape.batch)

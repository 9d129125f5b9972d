"""Exported ONNX graphs (fp32 or int8) in ONNX Runtime or OpenVINO, behind eval's Detector: the same
preprocessing, selection and COCO scoring as the MindSpore model, so a deployed graph's AP is one command.

The graph must follow the export contract (docs/deployment.md): input `images` [B, 3, S, S], output
`detections` [B, N, 5 + C]; B and S come from the file.
"""
import os
from typing import Callable, List, NamedTuple, Tuple

import numpy as np

from src.engine.detector import Detector
from src.errors import UserError
from src.models.spec import ModelSpec

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


def read_graph_shape(path: str) -> GraphShape:
    """The shape of an exported detections graph; a UserError when `path` is not one."""
    import onnx
    from google.protobuf.message import DecodeError
    if not os.path.isfile(path):
        raise UserError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, ValueError, OSError) as e:
        raise UserError(f"{path} is not an ONNX file ({type(e).__name__})") from None
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


def onnxruntime_session(path: str, threads: int = 0) -> Session:
    """The graph in ONNX Runtime's CPU provider (threads 0: its default, one per core)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(["detections"], {"images": x})[0]


def openvino_session(path: str, precision: str = "f32") -> Session:
    """The graph in OpenVINO's CPU plugin at an inference precision (`f32`; `bf16` where the CPU has it); an int8
    (QDQ) graph runs its quantised parts in int8 whatever the hint."""
    try:
        import openvino as ov
    except ImportError:
        raise UserError(OPENVINO_MISSING) from None
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()
    output = compiled.output("detections")
    return lambda x: request.infer({"images": x})[output]


def inference_session(path: str, runtime: str) -> Session:
    if runtime == "openvino":
        return openvino_session(path)
    return onnxruntime_session(path)


class GraphDetector(Detector):
    """Detector whose forward is an exported ONNX graph in `runtime` (fp32 in OpenVINO too)."""

    def __init__(self, config, path: str, runtime: str, batch_size: int):
        self.runtime = runtime
        super().__init__(config, path, batch_size)

    def load_model(self, config, weights: str) -> Tuple[ModelSpec, Session]:
        """The config's classes (a graph holds no names or ids) and the graph's session."""
        return ModelSpec.from_config(config), inference_session(weights, self.runtime)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.model(np.ascontiguousarray(batch, np.float32))


def graph_detector(config, logger) -> GraphDetector:
    """The detector for config.onnx_file: batch size and input size from the file (an error where the config names
    others, or other classes)."""
    path = config.onnx_file
    shape = read_graph_shape(path)
    for key, value in (("testing_shape", shape.size), ("per_batch_size", shape.batch),
                       ("num_classes", shape.columns - 5)):
        if getattr(config, key) != value and (config.is_set(key) or key == "num_classes"):
            raise UserError(f"{key} {getattr(config, key)} ({config.source(key)}) disagrees with {path}, whose "
                            f"graph has {key} {value}")
    config = config.with_values(testing_shape=shape.size, per_batch_size=shape.batch)
    logger.info("ONNX graph %s: batch %d, %dx%d, %d classes, in %s, %s", path, shape.batch, shape.size,
                shape.size, shape.columns - 5, config.runtime, "letterbox" if config.letterbox else "stretch")
    return GraphDetector(config, path, config.runtime, shape.batch)

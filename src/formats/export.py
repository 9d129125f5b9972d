"""Writing a MindSpore graph to MINDIR, ONNX or AIR, atomically."""
import mindspore as ms
from mindspore import nn

from src.fileio import atomic_path

EXTENSIONS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}


def export_graph(model: nn.Cell, sample: ms.Tensor, file_name: str, file_format: str) -> str:
    """Export `model` traced on `sample` to FILE_NAME.ext; returns the path. ONNX names its
    input 'images' and its output 'detections'."""
    target = file_name + EXTENSIONS[file_format]
    with atomic_path(target, EXTENSIONS[file_format]) as written:
        if file_format == "ONNX":
            ms.onnx.export(model, sample, file_name=written, input_names=["images"], output_names=["detections"])
        else:  # MindSpore adds the extension itself
            ms.export(model, sample, file_name=written[:-len(EXTENSIONS[file_format])], file_format=file_format)
    return target

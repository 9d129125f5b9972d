"""Writing a MindSpore graph to MINDIR, ONNX or AIR, atomically."""
import os

import mindspore as ms
from mindspore import nn

from src.fileio import temp_path_beside

EXTENSIONS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}


def export_graph(model: nn.Cell, sample: ms.Tensor, file_name: str, file_format: str) -> str:
    """Export `model` traced on `sample` to FILE_NAME.ext; returns the path. ONNX names its
    input 'images' and its output 'detections'."""
    target = file_name + EXTENSIONS[file_format]
    tmp = temp_path_beside(target)
    written = tmp + EXTENSIONS[file_format]
    try:
        if file_format == "ONNX":
            ms.onnx.export(model, sample, file_name=written, input_names=["images"], output_names=["detections"])
        else:
            ms.export(model, sample, file_name=tmp, file_format=file_format)
        os.replace(written, target)
    finally:
        if os.path.exists(written):
            os.remove(written)
    return target

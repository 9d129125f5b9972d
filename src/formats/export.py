"""Writing a MindSpore graph to MINDIR, ONNX or AIR with the model's card, atomically."""
import mindspore as ms
from mindspore import nn

from src.fileio import atomic_path
from src.formats.model_card import ModelCard, put_in_mindir, put_in_onnx, write_sidecar

EXTENSIONS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}


def export_graph(model: nn.Cell, sample: ms.Tensor, file_name: str, file_format: str, card: ModelCard) -> str:
    """Export `model` traced on `sample` to FILE_NAME.ext with `card` (ONNX: in metadata_props; MINDIR: in
    user_info; AIR: FILE_NAME.air.json beside it); returns the path. ONNX names its input 'images' and its
    output 'detections'."""
    target = file_name + EXTENSIONS[file_format]
    with atomic_path(target, EXTENSIONS[file_format]) as written:
        if file_format == "ONNX":
            import onnx
            ms.onnx.export(model, sample, file_name=written, input_names=["images"], output_names=["detections"])
            graph = onnx.load(written)
            put_in_onnx(graph, card)
            onnx.save(graph, written)
        elif file_format == "MINDIR":  # MindSpore adds the extension itself
            ms.export(model, sample, file_name=written[:-len(".mindir")], file_format=file_format,
                      custom_func=lambda proto: put_in_mindir(proto, card))
        else:
            ms.export(model, sample, file_name=written[:-len(".air")], file_format=file_format)
    if file_format == "AIR":
        write_sidecar(target, card)
    return target

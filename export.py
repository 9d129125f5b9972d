"""Export YOLOv3 (network + box decode) to MINDIR, ONNX or AIR, with its model card.

The graph takes a float32 RGB NCHW batch in [0, 1] and returns one tensor
(B, N, 5+num_classes): scales in cfg order (coarsest first), rows ordered
(y, x, anchor), columns cx, cy, w, h in input pixels, objectness, class
probabilities. The model card (classes and category ids, anchors, input size,
letterbox, architecture: src/formats/model_card.py) goes into the ONNX file's
metadata_props, the MINDIR's user_info, or beside an AIR file (FILE.air.json);
the checkpoint's card decides the model unless the command line or your own
config file says otherwise.
"""
import os
import tempfile
from typing import List

from src.cpu.process import set_up_process

set_up_process()  # first: OpenMP reads its spin count when cv2 or MindSpore loads it
import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402

from model_utils.config import load_config  # noqa: E402
from model_utils.device_adapter import setup_device  # noqa: E402
from model_utils.moxing_adapter import run_with_modelarts  # noqa: E402
from src.engine.detector import build_detection_model, check_input_size  # noqa: E402
from src.errors import UserError, run_cli  # noqa: E402
from src.formats.export import export_graph  # noqa: E402
from src.formats.model_card import ModelCard  # noqa: E402
from src.formats.quantize import calibration_images, quantize_int8  # noqa: E402
from src.logger import get_logger  # noqa: E402


def export_model(config) -> str:
    """Write the exported file, with the model's card, atomically; returns its path."""
    fmt = config.file_format
    if fmt == "AIR" and config.device_target != "Ascend":
        raise UserError(f"AIR export needs an Ascend device (--device_target Ascend); this run uses "
                        f"{config.device_target}. Use MINDIR or ONNX here.")
    if not config.ckpt_file:
        raise UserError("no weights given: --ckpt_file CKPT (.ckpt or darknet .weights)")
    if config.batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {config.batch_size}")
    images = check_quantize_options(config)
    card, model = build_detection_model(config, config.ckpt_file, checksum=True)
    size = check_input_size(card.input_size)
    sample = ms.Tensor(np.zeros((config.batch_size, 3, size, size), np.float32))
    if not images:
        path = export_graph(model, sample, config.file_name, fmt, card)
        log_export(config, card, path)
        return path
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_graph(model, sample, os.path.join(tmp, "fp32"), fmt, card)
        path = quantize_int8(fp32, config.file_name + ".onnx", images, size, config.batch_size, card.letterbox)
    log_export(config, card, path)
    return path


def log_export(config, card: ModelCard, path: str) -> None:
    precision = "" if config.quantize == "none" else f", {config.quantize}"
    get_logger().info("exported %s (%s%s, batch %d, %dx%d, %d classes, weights %s) with its model card to %s",
                      card.spec.model_name, config.file_format, precision, config.batch_size, card.input_size,
                      card.input_size, card.spec.num_classes, card.weights_checksum, path)


def check_quantize_options(config) -> List[str]:
    """The calibration images of --quantize int8 (none for a float export); a UserError for options that do not
    fit together, before anything is built."""
    if config.quantize == "none":
        for key in ("calibration_dir", "calibration_images"):
            if config.is_set(key):
                raise UserError(f"--{key} applies to --quantize int8 only")
        return []
    if config.file_format != "ONNX":
        raise UserError(f"--quantize {config.quantize} writes ONNX only (--file_format ONNX), not {config.file_format}")
    return calibration_images(config.calibration_dir, config.calibration_images)


def main() -> None:
    config = load_config(description=__doc__)
    setup_device(config)
    run_with_modelarts(config, export_model)


if __name__ == "__main__":
    run_cli(main)

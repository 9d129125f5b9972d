"""YOLOv3 evaluation on a COCO-format data set: predictions.json and stats.json in eval_dir."""
import os
from typing import Optional, Tuple

from src.cpu.process import set_up_process

set_up_process()  # first: OpenMP reads its spin count when cv2 or MindSpore loads it

from model_utils.config import load_config  # noqa: E402
from model_utils.device_adapter import init_distributed, setup_device  # noqa: E402
from model_utils.moxing_adapter import run_with_modelarts  # noqa: E402
from src.cpu.precision import setup_precision  # noqa: E402
from src.engine.evaluation import evaluate_detector, evaluate_model  # noqa: E402
from src.engine.onnx_runtime import graph_detector  # noqa: E402
from src.engine.precision_timing import measure_speedup  # noqa: E402
from src.errors import UserError, run_cli  # noqa: E402
from src.logger import get_logger  # noqa: E402


def resolve_paths(config) -> Tuple[str, str]:
    if not config.data_dir and not (config.ann_file and config.image_dir):
        raise UserError("give --data_dir (COCO layout) or both --ann_file and --image_dir")
    if config.data_dir and not os.path.isdir(config.data_dir):
        raise UserError(f"data_dir not found: {config.data_dir}")
    ann_file = config.ann_file or os.path.join(config.data_dir, "annotations", "instances_val2017.json")
    image_dir = config.image_dir or os.path.join(config.data_dir, "val2017")
    if not os.path.isdir(image_dir):
        raise UserError(f"image directory not found: {image_dir}")
    return ann_file, image_dir


def run_eval(config) -> Optional[dict]:
    """Evaluate; returns the stats (None on ranks other than 0 in distributed eval)."""
    ann_file, image_dir = resolve_paths(config)
    if config.onnx_file:
        if config.pretrained:
            raise UserError("give --onnx_file or --pretrained, not both")
        return evaluate_detector(config, graph_detector(config, get_logger()), ann_file, image_dir,
                                 config.eval_dir, get_logger())
    if config.is_set("runtime"):
        raise UserError("--runtime applies to --onnx_file only")
    if not config.pretrained:
        raise UserError("no weights given: --pretrained CKPT (.ckpt or darknet .weights)")
    return evaluate_model(config, config.pretrained, ann_file, image_dir, config.eval_dir, get_logger())


def main() -> None:
    config = load_config(description=__doc__)
    setup_device(config)
    setup_precision(config, get_logger().info, None if config.onnx_file else
                    measure_speedup(config, "infer", config.per_batch_size, config.testing_shape))
    if config.is_distributed:
        config = config.with_values(**init_distributed(config))
    run_with_modelarts(config, run_eval)


if __name__ == "__main__":
    run_cli(main)

"""Train or fine-tune YOLOv3 on a COCO-format data set (DATA_DIR/annotations/instances_train2017.json,
DATA_DIR/train2017/).

Checkpoints go to CKPT_PATH/ckpt_RANK/ and carry `epoch` and `global_step`;
`--resume True` continues the newest one, optimiser state included (in a
data-parallel run rank 0's, on every rank). Ctrl-C or SIGTERM saves a
resumable checkpoint before stopping.
"""
from src.cpu.process import set_up_process

set_up_process()  # first: OpenMP reads its spin count when cv2 or MindSpore loads it
import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402

from model_utils.config import load_config  # noqa: E402
from model_utils.device_adapter import init_distributed, setup_device  # noqa: E402
from model_utils.moxing_adapter import run_with_modelarts  # noqa: E402
from src.engine.trainer import Trainer  # noqa: E402
from src.errors import run_cli  # noqa: E402


def main() -> None:
    config = load_config(description=__doc__)
    setup_device(config)
    if config.is_distributed:
        config = config.with_values(**init_distributed(config))
    ms.set_seed(config.seed)
    np.random.seed(config.seed)
    run_with_modelarts(config, lambda resolved: Trainer(resolved).train())


if __name__ == "__main__":
    run_cli(main)

"""Helper for test_distributed.py: a few training steps, data-parallel (under msrun) or in one process.

usage: dist_equivalence.py DATA_DIR BATCH OUT.npz [--distributed]
writes OUT_rankR_init.npz (the initial parameters) and OUT_rankR.npz (after 2 steps).
BN layers use their running statistics, so that the only difference between
2 ranks of batch B and 1 process of batch 2B is how the gradients are summed.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.cpu.process import set_up_process  # noqa: E402

set_up_process()
import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402
from mindspore import nn  # noqa: E402
from model_utils.config import load_config  # noqa: E402
from model_utils.device_adapter import init_distributed, setup_device  # noqa: E402
from src.data.dataset import BatchSource, CocoTrainSet  # noqa: E402
from src.data.sampler import DistributedSampler  # noqa: E402
from src.engine.loss import YoloWithLoss  # noqa: E402
from src.engine.train_step import make_train_step  # noqa: E402
from src.models.spec import ModelSpec  # noqa: E402
from src.models.yolo import build_network  # noqa: E402


def main() -> None:
    data_dir, batch, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    tiny = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "yolov3_tiny.yaml")
    cfg = load_config(["--config_path", tiny, "--num_classes", "3", "--per_batch_size", str(batch),
                       "--training_shape", "96"])
    setup_device(cfg)
    if "--distributed" in sys.argv:
        cfg = cfg.with_values(is_distributed=True)
        cfg = cfg.with_values(**init_distributed(cfg))
    ms.set_seed(cfg.seed)
    data = CocoTrainSet(os.path.join(data_dir, "annotations", "instances_train2017.json"),
                        os.path.join(data_dir, "train2017"))
    sampler = DistributedSampler(len(data), cfg.group_size, cfg.rank, True, cfg.seed)
    spec = ModelSpec.from_config(cfg)
    source = BatchSource(data, sampler.indices(0), cfg, spec, epoch=0)
    network = build_network(spec)
    for _, cell in network.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            cell.use_batch_statistics = False
    step = make_train_step(YoloWithLoss.from_config(network, spec, cfg),
                           nn.Momentum(network.trainable_params(), 0.01, 0.9), 1024.0)
    step.set_train(True)
    np.savez(out.replace(".npz", f"_rank{cfg.rank}_init.npz"),
             **{n: p.asnumpy() for n, p in network.parameters_and_names()})
    for b in range(2):
        step(*[ms.Tensor(a) for a in source[b]])
    np.savez(out.replace(".npz", f"_rank{cfg.rank}.npz"),
             **{n: p.asnumpy() for n, p in network.parameters_and_names()})


if __name__ == "__main__":
    main()

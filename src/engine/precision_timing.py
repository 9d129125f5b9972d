"""`precision: auto` decided on the network: bf16 where the configured model runs faster in it than in fp32.

What is timed is the run's own work at its batch and input size: for training one step (forward and backward, the
real loss, optimiser and loss scale) on synthetic tensors, for inference one forward (BN folded, the CPU kernels),
fp32 and bf16 in turns, the best of a few of each. It runs in a child process (`python -m
src.engine.precision_timing`), so the run's own network, random state and compiled graphs are untouched, and once
per CPU and kernel build (the kernels' cache key), model, class count, kind, batch and size: the result is kept
beside the kernels, so that a resumed run and every rank of a distributed one (a file lock lets one of them
measure) choose alike. A gemm's ratio alone misled: the products are only part of a step (docs/performance.md).
"""
import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from typing import Dict, Iterator, List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROUNDS = 3  # timed calls per precision, after one untimed each


def synthetic_batch(config, spec, size: int, batch: int) -> List:
    """A training batch of random images and four random boxes each, as the data pipeline hands it over."""
    import numpy as np
    from mindspore import Tensor
    from src.data.targets import build_targets
    rng = np.random.default_rng(0)
    targets = []
    for _ in range(batch):
        xy = rng.uniform(0, size * 0.7, (4, 2))
        wh = rng.uniform(size * 0.05, size * 0.3, (4, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, size)], 1).astype(np.float32)
        targets.append(build_targets(boxes, rng.integers(0, spec.num_classes, 4), size, spec.anchor_scales,
                                     spec.anchor_mask, spec.num_classes, config.max_box))
    images = rng.uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
    return [Tensor(images)] + [Tensor(np.stack([t[i] for t in targets])) for i in range(len(targets[0]))]


def training_step(config, spec, size: int, batch: int):
    """One training step of a new network of `spec` on the CPU kernels (a callable), as train.py runs it."""
    from src.cpu.routing import use_cpu_training_kernels
    from src.engine.loss import YoloWithLoss
    from src.engine.train_step import make_optimizer, make_train_step
    from src.models.yolo import build_network
    network = build_network(spec)
    use_cpu_training_kernels(network)
    step = make_train_step(YoloWithLoss.from_config(network, spec, config), make_optimizer(network, config, 1e-4),
                           config.loss_scale)
    step.set_train(True)
    inputs = synthetic_batch(config, spec, size, batch)
    return lambda: step(*inputs)[0].asnumpy()


def inference_forward(config, size: int, batch: int):
    """One forward of the config's new model in inference (BN folded, the CPU kernels), as eval.py runs it."""
    import numpy as np
    from mindspore import Tensor
    from src.cpu.routing import use_cpu_inference_kernels
    from src.engine.detector import build_detection_model
    _, model = build_detection_model(config, None)
    use_cpu_inference_kernels(model)
    x = Tensor(np.random.default_rng(0).uniform(0, 1, (batch, 3, size, size)).astype(np.float32))
    return lambda: model(x).asnumpy()


def time_precisions(run, rounds: int = ROUNDS) -> Dict[str, float]:
    """The best seconds of `run` in fp32 and in bf16, the two in turns after one untimed call each."""
    from src.cpu.precision import set_precision
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for i in range(rounds + 1):
        for precision in best:
            set_precision(precision)
            t = time.perf_counter()
            run()
            if i:
                best[precision] = min(best[precision], time.perf_counter() - t)
    set_precision("fp32")
    return best


def workload_key(config, kind: str, batch: int, size: int) -> str:
    return f"{config.model_name}/{config.num_classes} classes/{kind}/batch {batch}/{size}"


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_kept(path: str) -> Dict[str, Dict[str, float]]:
    try:
        with open(path, encoding="utf-8") as f:
            kept = json.load(f)
        return kept if isinstance(kept, dict) else {}
    except (OSError, ValueError):
        return {}


def measure_in_child(config, kind: str, batch: int, size: int) -> Dict[str, float]:
    """time_precisions of the workload in a child process: {"fp32": s, "bf16": s}."""
    from src.errors import UserError
    argv = [sys.executable, "-m", "src.engine.precision_timing", "--config_path", config.config_path,
            "--model_name", config.model_name, "--num_classes", str(config.num_classes), "--kind", kind,
            "--batch", str(batch), "--size", str(size), "--device_target", config.device_target]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"precision auto: timing the network in fp32 and bf16 failed ({reason}); use --precision "
                        "fp32 or bf16")
    return json.loads(lines[-1])


def network_times(config, kind: str, batch: int, size: int) -> Dict[str, float]:
    """The kept seconds of the workload in fp32 and bf16 on this CPU and kernel build, measured on first use."""
    from src.cpu import cpu_kernels
    from src.fileio import write_json
    path = os.path.splitext(cpu_kernels.library())[0] + ".network_times.json"
    key = workload_key(config, kind, batch, size)
    with locked(path):
        kept = read_kept(path)
        if key not in kept:
            kept[key] = measure_in_child(config, kind, batch, size)
            try:
                write_json(path, kept)
            except OSError:
                pass
    return kept[key]


def measure_speedup(config, kind: str, batch: int, size: int):
    """For src.cpu.precision.choose: a callable giving the workload's bf16 speed over its fp32 speed here, and
    what was timed."""
    def speedup() -> float:
        times = network_times(config, kind, batch, size)
        return times["fp32"] / times["bf16"]

    what = f"{config.model_name} {'training step' if kind == 'train' else 'forward'} at batch {batch}, {size}"
    return speedup, what


def main() -> None:
    parser = argparse.ArgumentParser(description="Times the configured network in fp32 and bf16 (one JSON line).")
    parser.add_argument("--kind", choices=["train", "infer"], required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    args, rest = parser.parse_known_args()
    from src.cpu.process import set_up_process
    set_up_process()
    from model_utils.config import load_config
    from model_utils.device_adapter import setup_device
    from src.models.spec import ModelSpec
    config = load_config(rest)
    setup_device(config)
    if args.kind == "train":
        run = training_step(config, ModelSpec.from_config(config), args.size, args.batch)
    else:
        run = inference_forward(config, args.size, args.batch)
    print(json.dumps(time_precisions(run)), flush=True)


if __name__ == "__main__":
    main()

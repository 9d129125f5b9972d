"""This package against PyTorch eager (channels_last; fp32, and bf16 autocast) on the same CPU, in one run: the
forward at batch 1 and 8 and a training step at batch 8.

PyTorch is not a dependency of the package: the torch side runs in a venv of its own (--torch_venv, made on first
use: torch's CPU wheels from download.pytorch.org, else PyPI) as a worker process, with the same network built in
plain torch.nn from darknet's cfg (random weights; for the forward BN folded into the convolutions, as the package
runs inference; for training conv + BN + leaky ReLU, SGD with momentum, and as loss the mean square of the heads'
outputs: lighter than the package's YOLO loss, so the torch side's training figure is if anything flattered).
The two sides take turns, round after round (MindSpore fp32, bf16, then torch fp32, bf16), so that a ratio compares
figures taken within seconds of each other on a shared machine; the table gives the medians over the rounds.

    python tools/torch_compare.py --config_path configs/yolov3_tiny.yaml --cfg ../shared/darknet/yolov3-tiny.cfg
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
TRAIN_BATCH = 8
FIGURES = (("forward", 1), ("forward", 8), ("train", TRAIN_BATCH))


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ---- torch side (runs in the torch venv) ----

def read_cfg(path: str) -> List[Dict[str, str]]:
    """darknet cfg sections as dicts with their type under 'type' ([net] first)."""
    sections: List[Dict[str, str]] = []
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line.startswith("["):
                sections.append({"type": line.strip("[]")})
            elif "=" in line:
                key, value = line.split("=", 1)
                sections[-1][key.strip()] = value.strip()
    return sections


def torch_network(cfg_path: str, training: bool = False):
    """darknet's network from its cfg as a torch.nn.Module: for inference conv with bias, leaky ReLU 0.1; for
    training conv without bias + BN where the cfg has batch_normalize."""
    import torch
    from torch import nn

    class Darknet(nn.Module):
        def __init__(self, sections):
            super().__init__()
            self.sections, self.layers, channels = sections[1:], nn.ModuleList(), []
            c = int(sections[0].get("channels", 3))
            for s in self.sections:
                kind = s["type"]
                if kind == "convolutional":
                    k, filters = int(s["size"]), int(s["filters"])
                    bn = training and int(s.get("batch_normalize", 0))
                    layer = nn.Conv2d(c, filters, k, int(s.get("stride", 1)), k // 2 if int(s.get("pad", 0)) else 0,
                                      bias=not bn)
                    if bn:
                        layer = nn.Sequential(layer, nn.BatchNorm2d(filters))
                    c = filters
                elif kind == "maxpool":
                    size, stride = int(s["size"]), int(s["stride"])
                    pad = nn.ZeroPad2d((0, 1, 0, 1)) if stride == 1 else nn.Identity()  # darknet keeps the size
                    layer = nn.Sequential(pad, nn.MaxPool2d(size, stride))
                elif kind == "route":
                    idx = [int(v) for v in s["layers"].split(",")]
                    idx = [i if i >= 0 else len(channels) + i for i in idx]
                    s["_from"] = idx
                    c = sum(channels[i] for i in idx)
                    layer = nn.Identity()
                elif kind == "shortcut":
                    s["_from"] = [len(channels) + int(s["from"])]
                    layer = nn.Identity()
                elif kind == "upsample":
                    layer = nn.Upsample(scale_factor=int(s["stride"]), mode="nearest")
                else:  # yolo: an output
                    layer = nn.Identity()
                self.layers.append(layer)
                channels.append(c)

        def forward(self, x):
            outs, heads = [], []
            for s, layer in zip(self.sections, self.layers):
                kind = s["type"]
                if kind == "route":
                    x = torch.cat([outs[i] for i in s["_from"]], 1) if len(s["_from"]) > 1 else outs[s["_from"][0]]
                elif kind == "shortcut":
                    x = x + outs[s["_from"][0]]
                elif kind == "yolo":
                    heads.append(x)
                else:
                    x = layer(x)
                    if kind == "convolutional" and s.get("activation") == "leaky":
                        x = torch.nn.functional.leaky_relu(x, 0.1)
                outs.append(x)
            return heads

    net = Darknet(read_cfg(cfg_path))
    return net.train() if training else net.eval()


def torch_worker(cfg_path: str, shape: int) -> None:
    """Answers lines `KIND PRECISION BATCH REPEATS` (KIND forward or train) on stdin with the median seconds of a
    forward or a training step on stdout."""
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    net = torch_network(cfg_path).to(memory_format=torch.channels_last)
    train_net = torch_network(cfg_path, training=True).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(train_net.parameters(), lr=1e-4, momentum=0.9)
    print(json.dumps({"torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        kind, precision, batch, repeats = line.split()
        x = torch.rand(int(batch), 3, shape, shape).to(memory_format=torch.channels_last)
        autocast = torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16")

        def forward():
            with torch.no_grad(), autocast:
                return net(x)

        def train_step():
            optimizer.zero_grad()
            with autocast:
                loss = sum(head.float().square().mean() for head in train_net(x))
            loss.backward()
            optimizer.step()

        seconds = median_seconds(forward if kind == "forward" else train_step, int(repeats))
        print(json.dumps({"seconds": seconds}), flush=True)


def torch_python(venv: str) -> str:
    """The venv's python, with torch installed on first use."""
    exe = os.path.join(venv, "bin", "python")
    if os.path.exists(exe) and subprocess.run([exe, "-c", "import torch"], capture_output=True).returncode == 0:
        return exe
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [exe, "-m", "pip", "install", "-q", "torch", "numpy"]
    if subprocess.run(pip + ["--index-url", TORCH_INDEX], timeout=900).returncode:
        subprocess.run(pip, check=True, timeout=1800)  # PyPI's wheels
    return exe


# ---- MindSpore side (the project's venv) ----

def mindspore_side(config_path: str, weights: str, shape: int) -> Callable[[str, str, int, int], float]:
    sys.path.insert(0, ROOT)
    from src.cpu.process import set_up_process
    set_up_process()  # before MindSpore loads OpenMP
    import numpy as np
    from mindspore import Tensor
    from model_utils.config import load_config
    from model_utils.device_adapter import setup_device
    from src.cpu.precision import choose, set_precision
    from src.cpu.routing import use_cpu_inference_kernels
    from src.engine.detector import build_detection_model
    from src.engine.precision_timing import training_step
    from src.models.spec import ModelSpec
    config = load_config(["--config_path", config_path])
    setup_device(config)
    choose("bf16")  # a one-line error where the CPU cannot
    _, model = build_detection_model(config, weights or None)
    use_cpu_inference_kernels(model)
    step = training_step(config, ModelSpec.from_config(config), shape, TRAIN_BATCH)

    def run(kind: str, precision: str, batch: int, repeats: int) -> float:
        set_precision(precision)
        if kind == "train":
            return median_seconds(step, repeats)
        x = Tensor(np.random.default_rng(0).uniform(0, 1, (batch, 3, shape, shape)).astype(np.float32))
        return median_seconds(lambda: model(x).asnumpy(), repeats)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_path", required=True, help="the package's model config")
    parser.add_argument("--cfg", required=True, help="darknet's cfg of the same network (for the torch side)")
    parser.add_argument("--pretrained", default="", help="the package's weights (random if none)")
    parser.add_argument("--shape", type=int, default=416)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per figure and round")
    parser.add_argument("--torch_venv", default="/tmp/torchvenv")
    parser.add_argument("--json", default="")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch_worker(args.cfg, args.shape)
        return
    worker = subprocess.Popen([torch_python(args.torch_venv), os.path.abspath(__file__), "--worker", "--config_path",
                               args.config_path, "--cfg", args.cfg, "--shape", str(args.shape)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    torch_version = json.loads(worker.stdout.readline())["torch"]

    def torch_run(kind: str, precision: str, batch: int, repeats: int) -> float:
        worker.stdin.write(f"{kind} {precision} {batch} {repeats}\n")
        worker.stdin.flush()
        return json.loads(worker.stdout.readline())["seconds"]

    ms_run = mindspore_side(args.config_path, args.pretrained, args.shape)
    load = [os.getloadavg()[0]]
    figures: Dict[Tuple[str, str, str, int], List[float]] = {}
    for _ in range(args.rounds):
        for side, run in (("mindspore", ms_run), ("torch", torch_run)):
            for precision in ("fp32", "bf16"):
                for kind, batch in FIGURES:
                    repeats = args.repeats if kind == "forward" else max(3, args.repeats // 2)
                    figures.setdefault((side, kind, precision, batch), []).append(run(kind, precision, batch,
                                                                                      repeats))
    worker.stdin.close()
    worker.wait()
    load.append(os.getloadavg()[0])
    result = {"torch": torch_version, "shape": args.shape, "rounds": args.rounds, "load": load}
    print(f"\n{os.path.basename(args.config_path)} at {args.shape}, medians of {args.rounds} rounds; PyTorch "
          f"{torch_version} eager, channels_last; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end")
    print(f"{'':34}{'MindSpore':>11}{'PyTorch':>10}{'MS/PT speed':>13}")
    for precision in ("fp32", "bf16"):
        for kind, batch in FIGURES:
            ms_s, pt_s = (figures[(side, kind, precision, batch)] for side in ("mindspore", "torch"))
            speed = statistics.median(p / m for m, p in zip(ms_s, pt_s))  # > 1: MindSpore faster, round by round
            ms_v, pt_v = statistics.median(ms_s), statistics.median(pt_s)
            if batch == 1:
                name, ms_v, pt_v = f"{precision} forward batch 1 (ms)", ms_v * 1e3, pt_v * 1e3
            else:
                name, ms_v, pt_v = f"{precision} {kind} batch {batch} (images/s)", batch / ms_v, batch / pt_v
            print(f"{name:34}{ms_v:11.2f}{pt_v:10.2f}{speed:13.2f}")
            result[f"{precision}_{kind}_b{batch}"] = {"mindspore": ms_v, "torch": pt_v, "speed_ratio": speed}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

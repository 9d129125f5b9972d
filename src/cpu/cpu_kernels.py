"""Hand-written CPU kernels for the hot spots, as MindSpore aot custom ops.

On the CPU, MindSpore's MaxPoolGrad ran far below memory speed;
kernels/pool.cc does the same arithmetic in one pass. It also runs every
convolution of the networks (stride 1 and 2; for inference with its bias, the
folded BN, and leaky ReLU in one op, and MobileNetV2's depthwise ones) over the
oneDNN sgemm that MindSpore ships: MindSpore's Conv2D, BiasAdd and LeakyReLU were
far slower than ONNX Runtime on the same model, and on AVX-512 CPUs its oneDNN
picks reference convolution kernels (src/cpu/onednn.py). 3x3 stride-1 layers with
32 channels or more run as Winograd F(2x2, 3x3), 2.25 times fewer
multiplications, in inference and, with both gradients, in training. The
measurements behind each: docs/performance.md. The sgemm comes from a private copy of
MindSpore's libdnnl, so that it keeps AVX-512 while MindSpore's own instance is
capped at AVX2. The library is built once with g++ into the cache and used only
on the CPU; export keeps MindSpore's own ops (a custom op does not export), and
without a compiler or without MindSpore's libdnnl the stock ops are used (with
a warning).

In bf16 (src/cpu/precision.py) the passes where oneDNN's own convolution primitives
measured faster (kernels/dnnl_conv.cc, from the same private libdnnl; kernels/conv.cc's
onednn_runs: every pass oneDNN runs on AMX, by layer shape without AMX) run through them
instead; conv_route says which.

A fused leaky ReLU kernel was tried too and lost to 0.1x + 0.9 relu(x) in stock
ops.
"""
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from typing import List, Optional, Tuple

import mindspore as ms
from mindspore import ops

from src.cpu.onednn import isa_name, mindspore_dnnl_path
from src.fileio import atomic_path, cache_dir

KERNELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
LIBS = ["-ldl"]


def machine_flags() -> List[str]:
    """-march=native on x86-64 (the library is built where it runs; the cache key names the CPU)."""
    return ["-march=native"] if platform.machine().lower() in ("x86_64", "amd64") else []


def cpu_model() -> str:
    """The CPU's model and feature flags, for the cache key of a -march=native build."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def private_dnnl(folder: str) -> Optional[str]:
    """Where the kernels' copy of MindSpore's libdnnl goes in `folder`, None if MindSpore ships none. A copy, not a
    link: the loader would take a link for the library already loaded, and this instance must not share MindSpore's
    ISA cap."""
    source = mindspore_dnnl_path()
    if source is None:
        return None
    info = os.stat(source)
    key = hashlib.sha256(f"{os.path.realpath(source)}:{info.st_size}:{info.st_mtime_ns}".encode()).hexdigest()[:16]
    return os.path.join(folder, f"libdnnl-{key}.so")


def copy_once(source: str, path: str) -> None:
    if not os.path.exists(path):
        with atomic_path(path, ".so") as tmp:
            shutil.copyfile(source, tmp)


def sources() -> List[str]:
    """The kernels' C++ sources, built into one library (kernels/kernels.h is their common header)."""
    return [os.path.join(KERNELS, name) for name in sorted(os.listdir(KERNELS)) if name.endswith(".cc")]


@functools.lru_cache(maxsize=None)
def library() -> Optional[str]:
    """Path of the built kernel library (built on first use), or None when it cannot be built."""
    folder = os.path.join(cache_dir(), "kernels")
    dnnl = private_dnnl(folder)
    if dnnl is None:
        warnings.warn("no libdnnl in the mindspore package: the CPU uses MindSpore's own (slower) ops")
        return None
    flags = FLAGS + machine_flags() + [f'-DYOLO_DNNL="{dnnl}"']
    digest = hashlib.sha256(" ".join(flags).encode() + cpu_model().encode())
    for name in sorted(os.listdir(KERNELS)):
        with open(os.path.join(KERNELS, name), "rb") as f:
            digest.update(name.encode() + f.read())
    key = digest.hexdigest()[:16]
    path = os.path.join(folder, f"cpu_kernels-{key}.so")
    compiler = shutil.which("g++")
    if not os.path.exists(path) and compiler is None:
        warnings.warn("g++ not found: the CPU uses MindSpore's own (slower) ops")
        return None
    try:
        copy_once(mindspore_dnnl_path(), dnnl)
        if not os.path.exists(path):
            with atomic_path(path, ".so") as tmp:
                subprocess.run([compiler, *flags, "-o", tmp, *sources(), *LIBS], capture_output=True, text=True,
                               check=True)
    except subprocess.CalledProcessError as e:
        warnings.warn(f"building the CPU kernels ({KERNELS}) failed, using MindSpore's own ops: "
                      f"{e.stderr.strip()[:300]}")
        return None
    except OSError as e:
        warnings.warn(f"cannot build the CPU kernels into {folder} ({e}); using MindSpore's own ops")
        return None
    if not ctypes.CDLL(path).KernelsReady():
        warnings.warn(f"the CPU kernels cannot load their sgemm from {dnnl}; using MindSpore's own ops")
        return None
    return path


def sgemm_isa() -> str:
    """The instruction set of the kernels' sgemm ("none" without the kernels)."""
    path = library() if ms.get_context("device_target") == "CPU" else None
    return isa_name(ctypes.CDLL(path).KernelsIsa()) if path else "none"


def enabled() -> bool:
    return ms.get_context("device_target") == "CPU" and library() is not None


def _op(name: str, out_shape, bprop=None) -> ops.Custom:
    return ops.Custom(f"{library()}:{name}", out_shape=out_shape, out_dtype=lambda *dtypes: dtypes[0],
                      func_type="aot", bprop=bprop)


def maxpool2x2() -> ops.Custom:
    """2x2 stride-2 max-pool of an NCHW float32 tensor with even H and W."""
    grad = _op("MaxPool2x2Grad", lambda x, y, dy: x)

    def bprop(x, out, dout):
        return (grad(x, out, dout),)

    return _op("MaxPool2x2", lambda x: (x[0], x[1], x[2] // 2, x[3] // 2), bprop)


def maxpool2x2_stride1() -> ops.Custom:
    """darknet's 2x2 stride-1 max-pool of an NCHW float32 tensor (same size out, the last row and column
    repeated), its gradient a kernel too."""
    grad = _op("MaxPool2x2Stride1Grad", lambda x, y, dy: x)

    def bprop(x, out, dout):
        return (grad(x, out, dout),)

    return _op("MaxPool2x2Stride1", lambda x: x, bprop)


def conv_bias(leaky: bool, stride: int = 1) -> ops.Custom:
    """Inference: convolution with padding k // 2, stride 1 or 2 and one group, plus a bias, then leaky ReLU (slope
    0.1) if asked: (x, weight (o, c, k, k), bias (o,)) -> y. No gradient."""
    name = ("ConvBiasLeaky" if leaky else "ConvBias") + ("Stride2" if stride == 2 else "")
    return _op(name, lambda x, w, b: (x[0], w[0], out_size(x[2], w[2], stride), out_size(x[3], w[3], stride)))


def darknet_stage() -> ops.Custom:
    """Inference: a DarkNet-53 stage, its stride-2 3x3 convolution and then residual blocks y + conv2(conv1(y)) (1x1,
    then 3x3), every convolution with its bias and leaky ReLU: (x, weight, bias, then w1, b1, w2, b2 per block) ->
    y. No gradient. In bf16 where oneDNN runs every convolution of the stage, the stage stays in NHWC."""
    return _op("DarknetStage", lambda x, w, *rest: (x[0], w[0], out_size(x[2], 3, 2), out_size(x[3], 3, 2)))


def yolo_block() -> ops.Custom:
    """Inference: a YOLO block, five convolutions (1x1, 3x3, 1x1, 3x3, 1x1) to the route, then a 3x3 and the head's
    linear 1x1, each with its bias, all but the head with leaky ReLU: (x, then each one's weight and bias) -> (route,
    head map). No gradient. In bf16 where oneDNN runs every convolution of the block, it stays in NHWC."""
    def shapes(x, w0, *rest):
        return (x[0], rest[7][0], x[2], x[3]), (x[0], rest[11][0], x[2], x[3])

    return ops.Custom(f"{library()}:YoloBlock", out_shape=shapes, out_dtype=lambda x, *rest: (x, x),
                      func_type="aot")


def depthwise_bias(leaky: bool, stride: int = 1) -> ops.Custom:
    """Inference: depthwise 3x3 convolution with padding 1, stride 1 or 2, plus a bias, then leaky ReLU if asked:
    (x, weight (c, 1, 3, 3), bias (c,)) -> y. No gradient."""
    name = ("DepthwiseBiasLeaky" if leaky else "DepthwiseBias") + ("Stride2" if stride == 2 else "")
    return _op(name, lambda x, w, b: (x[0], x[1], out_size(x[2], 3, stride), out_size(x[3], 3, stride)))


def conv(stride: int = 1) -> ops.Custom:
    """Training: convolution with padding k // 2, stride 1 or 2, one group and no bias: (x, weight (o, c, k, k)) ->
    y, its input and weight gradients kernels too."""
    name = "ConvSame" if stride == 1 else "ConvStride2"
    grad_input = _op(f"{name}GradInput", lambda x, dy, w: x)
    grad_weight = _op(f"{name}GradWeight", lambda x, dy, w: w)

    def bprop(x, weight, out, dout):
        return grad_input(x, dout, weight), grad_weight(x, dout, weight)

    return _op(name, lambda x, w: (x[0], w[0], out_size(x[2], w[2], stride), out_size(x[3], w[3], stride)), bprop)


def batchnorm_act() -> ops.Custom:
    """Training: batch normalisation with the batch's statistics, then leaky ReLU with a slope (1 for none):
    (x (n, c, h, w), gamma (c,), beta (c,), settings (eps, slope)) -> (y, batch mean (c,), biased batch variance
    (c,)); the gradient (of y only: the statistics feed the moving averages) is a kernel too."""
    grad = ops.Custom(f"{library()}:BatchNormActGrad", out_shape=lambda x, dy, g, b, m, v, s: (x, g, g),
                      out_dtype=lambda x, *rest: (x, x, x), func_type="aot")

    def bprop(x, gamma, beta, settings, out, dout):
        dx, dgamma, dbeta = grad(x, dout[0], gamma, beta, out[1], out[2], settings)
        return dx, dgamma, dbeta, ops.zeros_like(settings)

    return ops.Custom(f"{library()}:BatchNormAct", out_shape=lambda x, g, b, s: (x, g, g),
                      out_dtype=lambda x, *rest: (x, x, x), func_type="aot", bprop=bprop)


def depthwise_training(stride: int = 1) -> ops.Custom:
    """Training: depthwise 3x3 convolution with padding 1, stride 1 or 2, no bias: (x, weight (c, 1, 3, 3)) -> y,
    its input and weight gradients kernels too."""
    name = "Depthwise" if stride == 1 else "DepthwiseStride2"
    grad_input = _op(f"{name}GradInput", lambda x, dy, w: x)
    grad_weight = _op(f"{name}GradWeight", lambda x, dy, w: w)

    def bprop(x, weight, out, dout):
        return grad_input(x, dout, weight), grad_weight(x, dout, weight)

    return _op(name, lambda x, w: (x[0], x[1], out_size(x[2], 3, stride), out_size(x[3], 3, stride)), bprop)


def conv_bias_training() -> ops.Custom:
    """Training: a stride-1 convolution with padding k // 2, one group, and a bias (the heads' output convs):
    (x, weight (o, c, k, k), bias (o,)) -> y, its input, weight and bias gradients kernels too."""
    grad_input = _op("ConvSameGradInput", lambda x, dy, w: x)
    grad_weight = _op("ConvSameGradWeight", lambda x, dy, w: w)
    grad_bias = _op("ChannelSums", lambda dy: (dy[1],))

    def bprop(x, weight, bias, out, dout):
        return grad_input(x, dout, weight), grad_weight(x, dout, weight), grad_bias(dout)

    return _op("ConvBias", lambda x, w, b: (x[0], w[0], x[2], x[3]), bprop)


CONV_PASSES = ("forward", "input gradient", "weight gradient")


def conv_route(x_shape: Tuple[int, int, int, int], weight_shape: Tuple[int, int, int, int], stride: int
               ) -> List[Optional[str]]:
    """For each pass of a convolution (CONV_PASSES) in the current precision: the implementation name of the
    oneDNN primitive that runs it (made on this call if it was not yet), or None where the hand-written kernels
    do (and everywhere without the kernels)."""
    path = library() if ms.get_context("device_target") == "CPU" else None
    if path is None:
        return [None] * len(CONV_PASSES)
    route = ctypes.CDLL(path).KernelsConvRoute
    route.argtypes = [ctypes.c_int] + [ctypes.c_int64] * 7 + [ctypes.c_char_p, ctypes.c_int]
    names: List[Optional[str]] = []
    for kind in range(len(CONV_PASSES)):
        name = ctypes.create_string_buffer(256)
        chosen = route(kind, *x_shape, weight_shape[0], weight_shape[2], stride, name, len(name))
        names.append(name.value.decode() if chosen else None)
    return names


def out_size(size: int, kernel: int, stride: int) -> int:
    """Output size of a convolution with padding kernel // 2."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1

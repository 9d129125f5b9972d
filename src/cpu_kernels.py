"""Hand-written CPU kernels for the hot spots, as MindSpore aot custom ops.

On the CPU, MindSpore's MaxPoolGrad took 15% of a yolov3-tiny training step
(about 70 ms a call, far above memory speed); kernels/cpu_kernels.cc does the
same arithmetic in one pass. For inference it also has the stride-1
convolution with its bias (the folded BN) and leaky ReLU in one op, over the
oneDNN sgemm that MindSpore ships: MindSpore's Conv2D, BiasAdd and LeakyReLU
took yolov3-tiny's forward to 2.6x ONNX Runtime's time. 3x3 layers with 32
channels or more run as Winograd F(2x2, 3x3), 2.25x fewer multiplications, in
inference and, with both gradients, in training. The library is built
once with g++ into the cache and used only on the CPU; export keeps
MindSpore's own ops (a custom op does not export), and without a compiler or
without MindSpore's libdnnl the stock ops are used (with a warning).

A fused leaky ReLU kernel was tried too and lost to 0.1x + 0.9 relu(x) in stock
ops: an aot kernel's large outputs cost more inside MindSpore than in a plain
C++ harness.
"""
import functools
import glob
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from typing import List, Optional

import mindspore as ms
from mindspore import ops

from src.fileio import cache_dir, temp_path_beside

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "cpu_kernels.cc")
FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]


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


def dnnl_flags() -> Optional[List[str]]:
    """Link flags for the libdnnl inside the mindspore package (its sgemm), None if it has none."""
    found = sorted(glob.glob(os.path.join(os.path.dirname(ms.__file__), "lib", "libdnnl.so*")))
    if not found:
        return None
    lib_dir = os.path.dirname(found[0])
    return [f"-L{lib_dir}", f"-l:{os.path.basename(found[0])}", f"-Wl,-rpath,{lib_dir}"]


@functools.lru_cache(maxsize=None)
def library() -> Optional[str]:
    """Path of the built kernel library (built on first use), or None when it cannot be built."""
    dnnl = dnnl_flags()
    if dnnl is None:
        warnings.warn("no libdnnl in the mindspore package: the CPU uses MindSpore's own (slower) ops")
        return None
    flags = FLAGS + machine_flags()
    with open(SOURCE, "rb") as f:
        key = hashlib.sha256(f.read() + " ".join(flags + dnnl).encode() + cpu_model().encode()).hexdigest()[:16]
    path = os.path.join(cache_dir(), "kernels", f"cpu_kernels-{key}.so")
    if os.path.exists(path):
        return path
    compiler = shutil.which("g++")
    if compiler is None:
        warnings.warn("g++ not found: the CPU uses MindSpore's own (slower) ops")
        return None
    tmp = ""
    try:
        tmp = temp_path_beside(path, ".so")
        result = subprocess.run([compiler, *flags, "-o", tmp, SOURCE, *dnnl], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            warnings.warn(f"building {SOURCE} failed, using MindSpore's own ops: {result.stderr.strip()[:300]}")
            return None
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"cannot build the CPU kernels into {os.path.dirname(path)} ({e}); using MindSpore's own ops")
        return None
    finally:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
    return path


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
    """Inference: darknet's 2x2 stride-1 max-pool of an NCHW float32 tensor (same size out). No gradient."""
    return _op("MaxPool2x2Stride1", lambda x: x)


def conv_bias(leaky: bool) -> ops.Custom:
    """Inference: stride-1 convolution with padding k // 2 and one group, plus a bias, then leaky ReLU (slope
    0.1) if asked: (x, weight (o, c, k, k), bias (o,)) -> y. No gradient."""
    return _op("ConvBiasLeaky" if leaky else "ConvBias", lambda x, w, b: (x[0], w[0], x[2], x[3]))


def conv_same() -> ops.Custom:
    """Training: stride-1 convolution with padding k // 2, one group and no bias: (x, weight (o, c, k, k)) -> y,
    its input and weight gradients kernels too."""
    grad_input = _op("ConvSameGradInput", lambda dy, w: (dy[0], w[1], dy[2], dy[3]))
    grad_weight = _op("ConvSameGradWeight", lambda x, dy, w: w)

    def bprop(x, weight, out, dout):
        return grad_input(dout, weight), grad_weight(x, dout, weight)

    return _op("ConvSame", lambda x, w: (x[0], w[0], x[2], x[3]), bprop)

"""Hand-written CPU kernels for the training hot spots, as MindSpore aot custom ops.

On the CPU, MindSpore's MaxPoolGrad took 15% of a yolov3-tiny training step
(about 70 ms a call, far above memory speed); kernels/cpu_kernels.cc does the
same arithmetic in one pass. It is built once with g++ into the cache and used
only while training on the CPU: inference and export keep MindSpore's own
ops, and without a compiler the stock ops are used (with a warning).

A fused leaky ReLU kernel was tried too and lost to 0.1x + 0.9 relu(x) in stock
ops: an aot kernel's large outputs cost more inside MindSpore than in a plain
C++ harness.
"""
import functools
import hashlib
import os
import shutil
import subprocess
import warnings
from typing import Optional

import mindspore as ms
from mindspore import ops

from src.fileio import cache_dir, temp_path_beside

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "cpu_kernels.cc")
FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]


@functools.lru_cache(maxsize=None)
def library() -> Optional[str]:
    """Path of the built kernel library (built on first use), or None when it cannot be built."""
    with open(SOURCE, "rb") as f:
        key = hashlib.sha256(f.read() + " ".join(FLAGS).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir(), "kernels", f"cpu_kernels-{key}.so")
    if os.path.exists(path):
        return path
    compiler = shutil.which("g++")
    if compiler is None:
        warnings.warn("g++ not found: training on the CPU uses MindSpore's slower max-pool op")
        return None
    tmp = ""
    try:
        tmp = temp_path_beside(path, ".so")
        result = subprocess.run([compiler, *FLAGS, "-o", tmp, SOURCE], capture_output=True, text=True, check=False)
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


"""The oneDNN inside MindSpore on x86 CPUs: keep its convolutions off oneDNN's reference kernels.

On a CPU exposing AVX-512, MindSpore 2.10's oneDNN runs every NCHW convolution
with a kernel larger than 1x1 as `jit_uni_ncsp:conv+ref` (0.2-1.5 GFLOP/s,
forward and backward); capped at AVX2 it picks `gemm:jit` (about 100x faster).
On an AVX2-only CPU the cap changes nothing. The cap must be set before that
oneDNN makes its first primitive, so src.layers sets it on import. A user's own
ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) is left as it is.

The project's CPU kernels (src/cpu_kernels.py) load their own copy of the
library, which this cap does not reach: their sgemm keeps AVX-512.
"""
import ctypes
import functools
import glob
import os
import platform
import warnings
from typing import Optional

import mindspore as ms

# dnnl_cpu_isa_t values (oneDNN 3.x, dnnl_types.h)
ISA_AVX2 = 0x7
ISA_NAMES = {0x1: "SSE4.1", 0x3: "AVX", 0x7: "AVX2", 0xF: "AVX2_VNNI", 0x1F: "AVX2_VNNI_2", 0x27: "AVX512_CORE",
             0x67: "AVX512_CORE_VNNI", 0xE7: "AVX512_CORE_BF16", 0x1EF: "AVX10_1_512", 0x3EF: "AVX10_1_512_AMX",
             0x7EF: "AVX10_1_512_AMX_FP16", 0xFEF: "AVX10_2_512", 0x1FEF: "AVX10_2_512_AMX_2"}
USER_SETTINGS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def mindspore_dnnl_path() -> Optional[str]:
    """The libdnnl that MindSpore ships (None where it ships none, e.g. a GPU-only build)."""
    found = sorted(glob.glob(os.path.join(os.path.dirname(ms.__file__), "lib", "libdnnl.so*")))
    return found[0] if found else None


@functools.lru_cache(maxsize=None)
def _mindspore_dnnl() -> Optional[ctypes.CDLL]:
    path = mindspore_dnnl_path()
    if path is None or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return ctypes.CDLL(path)  # the same file MindSpore loaded: the same library instance


@functools.lru_cache(maxsize=None)
def limit_mindspore_isa() -> None:
    """Cap MindSpore's oneDNN at AVX2 (x86 only, once per process, unless the user set a cap)."""
    lib = _mindspore_dnnl()
    if lib is None or any(os.environ.get(name) for name in USER_SETTINGS):
        return
    if lib.dnnl_set_max_cpu_isa(ISA_AVX2) != 0 and lib.dnnl_get_effective_cpu_isa() > ISA_AVX2:
        warnings.warn("MindSpore's oneDNN ran before src.onednn could cap it at AVX2: on this CPU its "
                      "convolutions may use oneDNN's slow reference kernels (import src.layers earlier)")


def mindspore_isa() -> str:
    """The instruction set MindSpore's oneDNN dispatches to (after this module's cap)."""
    limit_mindspore_isa()  # reading the ISA fixes it
    lib = _mindspore_dnnl()
    if lib is None:
        return "none"
    isa = lib.dnnl_get_effective_cpu_isa()
    return ISA_NAMES.get(isa, hex(isa))

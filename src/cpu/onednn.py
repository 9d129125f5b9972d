"""The oneDNN inside MindSpore on x86 CPUs: keep its convolutions off oneDNN's reference kernels.

On a CPU exposing AVX-512, MindSpore 2.10's oneDNN runs every NCHW convolution
with a kernel larger than 1x1 as `jit_uni_ncsp:conv+ref`, forward and backward;
capped at AVX2 it picks `gemm:jit`, orders of magnitude faster (docs/performance.md).
On an AVX2-only CPU the cap changes nothing. The cap must be set before that
oneDNN makes its first primitive: src.cpu.process.set_up_process sets it. A user's own
ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) is left as it is.

The project's CPU kernels (src/cpu/cpu_kernels.py) load their own copy of the
library, which this cap does not reach: their sgemm keeps AVX-512.
"""
import contextlib
import ctypes
import functools
import glob
import os
import platform
import sys
import tempfile
import warnings
from typing import Iterator, List, Optional

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
        warnings.warn("MindSpore's oneDNN ran before src.cpu.onednn could cap it at AVX2: on this CPU its "
                      "convolutions may use oneDNN's slow reference kernels (call src.cpu.process.set_up_process "
                      "first)")


def mindspore_isa() -> str:
    """The instruction set MindSpore's oneDNN dispatches to (after this module's cap)."""
    limit_mindspore_isa()  # reading the ISA fixes it
    lib = _mindspore_dnnl()
    if lib is None:
        return "none"
    return isa_name(lib.dnnl_get_effective_cpu_isa())


def isa_name(isa: int) -> str:
    return ISA_NAMES.get(isa, hex(isa))


def convolution_implementations(verbose_output: str) -> List[str]:
    """The implementation name of every convolution primitive executed, from ONEDNN_VERBOSE=1 output."""
    names = []
    for line in verbose_output.splitlines():
        fields = line.strip().split(",")
        if fields[0] == "onednn_verbose" and "exec" in fields[:4]:
            kind = fields.index("exec") + 2  # exec, engine, primitive kind, implementation
            if len(fields) > kind + 1 and fields[kind] == "convolution":
                names.append(fields[kind + 1])
    return names


def reference_kernels(implementations: List[str]) -> List[str]:
    """The implementations that are (or fall back to) oneDNN's reference code."""
    return [name for name in implementations if "ref" in name]


@contextlib.contextmanager
def verbose_record() -> Iterator[List[str]]:
    """Turn on MindSpore's oneDNN verbose output for the block and collect the lines it prints (its stdout goes to
    a file meanwhile); the yielded list is filled when the block ends."""
    lib = _mindspore_dnnl()
    lines: List[str] = []
    if lib is None:
        yield lines
        return
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as out:
        os.dup2(out.fileno(), 1)
        lib.dnnl_set_verbose(1)
        try:
            yield lines
        finally:
            lib.dnnl_set_verbose(0)
            libc.fflush(None)
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            out.seek(0)
            lines.extend(line for line in out.read().splitlines() if line.startswith("onednn_verbose"))

"""This machine's matrix-product rates in each precision, through the CPU kernels' private libdnnl: fp32
(dnnl_sgemm), bf16 operands with fp32 results (dnnl_gemm_bf16bf16f32) and u8 x s8 -> s32 (dnnl_gemm_u8s8s32).

Each product is n x n x n with its columns split over one thread per core, each thread one single-threaded call,
as the kernels call them; the rate of the fastest of `repeats` runs after one untimed (G(FL)OP/s: 2 n^3 / s).
"""
import concurrent.futures
import ctypes
import os
import time
from typing import Callable, Optional

import numpy as np

from src.cpu import cpu_kernels

I64, F32, PTR, CHAR = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_char


def _dnnl() -> Optional[ctypes.CDLL]:
    """The kernels' private libdnnl (the instance they loaded), None without the kernels."""
    if cpu_kernels.library() is None:
        return None
    return ctypes.CDLL(cpu_kernels.private_dnnl(os.path.dirname(cpu_kernels.library())),
                       mode=os.RTLD_LOCAL | os.RTLD_DEEPBIND)


def _rate(part: Callable[[int, int], None], n: int, repeats: int) -> float:
    """G(FL)OP/s of the product whose columns [lo, lo + cols) part(lo, cols) computes, on all cores."""
    threads = os.cpu_count() or 1
    step = -(-n // threads)

    def run() -> None:
        list(pool.map(lambda lo: part(lo, min(step, n - lo)), range(0, n, step)))

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        run()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def _float_gflops(symbol: str, a: np.ndarray, repeats: int) -> float:
    """dnnl_sgemm or dnnl_gemm_bf16bf16f32 (same arguments; operands a, already in its type) on a @ a; 0 without
    the kernels."""
    lib = _dnnl()
    if lib is None:
        return 0.0
    gemm = getattr(lib, symbol)
    gemm.argtypes = [CHAR, CHAR, I64, I64, I64, F32, PTR, I64, PTR, I64, F32, PTR, I64]
    n, size = len(a), a.itemsize
    c = np.empty((n, n), np.float32)
    return _rate(lambda lo, cols: gemm(b"N", b"N", n, cols, n, 1.0, a.ctypes.data, n, a.ctypes.data + size * lo, n,
                                       0.0, c.ctypes.data + 4 * lo, n), n, repeats)


def fp32_gflops(repeats: int, n: int = 2048) -> float:
    return _float_gflops("dnnl_sgemm", np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), repeats)


def bf16_gflops(repeats: int, n: int = 2048) -> float:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    return _float_gflops("dnnl_gemm_bf16bf16f32", (a.view(np.uint32) >> 16).astype(np.uint16), repeats)


def int8_gops(repeats: int, n: int = 2048) -> float:
    """dnnl_gemm_u8s8s32 (zero offsets); 0 without the kernels."""
    lib = _dnnl()
    if lib is None:
        return 0.0
    gemm = lib.dnnl_gemm_u8s8s32
    gemm.argtypes = [CHAR, CHAR, CHAR, I64, I64, I64, F32, PTR, I64, ctypes.c_uint8, PTR, I64, ctypes.c_int8, F32,
                     PTR, I64, PTR]
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    b = rng.integers(-128, 128, (n, n), dtype=np.int8)
    c = np.empty((n, n), np.int32)
    offset = np.zeros(1, np.int32)
    return _rate(lambda lo, cols: gemm(b"N", b"N", b"F", n, cols, n, 1.0, a.ctypes.data, n, 0, b.ctypes.data + lo, n,
                                       0, 0.0, c.ctypes.data + 4 * lo, n, offset.ctypes.data), n, repeats)


def bf16_speedup(rounds: int = 3, n: int = 1024) -> float:
    """The bf16 gemm's rate over the fp32 sgemm's on this machine, the two in turns (the best of `rounds` each, so
    that a busy moment does not decide); 0 without the kernels."""
    fp32 = bf16 = 0.0
    for _ in range(rounds):
        fp32 = max(fp32, fp32_gflops(1, n))
        bf16 = max(bf16, bf16_gflops(1, n))
    return bf16 / fp32 if fp32 else 0.0

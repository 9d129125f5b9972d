"""The `precision` key: the CPU kernels' convolutions in fp32, or in bf16 (bf16 operands, fp32 accumulation).

In bf16 every matrix product of src/cpu/cpu_kernels.py (the convolutions, forward and both gradients, Winograd's
too) rounds its two operands to bfloat16 and accumulates and writes fp32 (oneDNN's dnnl_gemm_bf16bf16f32, on AMX
or AVX512-BF16), and the passes where oneDNN's own bf16 convolution primitives measured faster run on those (same
rounding: bf16 operands, fp32 accumulation and result). Everything else stays fp32: the RGB layer's direct
convolution, the depthwise ones (no matrix product), batch normalisation and its statistics, the loss, the loss
scale, the optimiser and the weights.

An explicit bf16 on a CPU without bf16 arithmetic (or without the kernels) is an error, not a quiet fallback: oneDNN
would emulate it slower than fp32 and less exactly, and a run, benchmark or AP labelled bf16 would not be one.
`auto` on a CPU with bf16 arithmetic times the run's own work (train.py a training step, eval.py and predict.py a
forward, at their batch and size) in both precisions and takes the faster (src/engine/precision_timing.py, kept
per CPU, kernel build, model and shape); without a workload to time (tools), it takes bf16 with AMX, and with
AVX512-BF16 alone if oneDNN's bf16 gemm measures at least AUTO_BF16_SPEEDUP times its fp32 sgemm's rate here (2x
on an AMD EPYC, half on an Intel Xeon without AMX exposed: docs/performance.md, "bf16").
"""
import ctypes
import json
import os
from typing import Callable, Optional, Tuple

import mindspore as ms

from src.cpu import cpu_kernels, matmul_peaks
from src.cpu.onednn import isa_name
from src.errors import UserError
from src.fileio import write_json

ISA_AVX512_CORE_BF16 = 0xE7  # dnnl_cpu_isa_t: the bits every ISA with bf16 dot products (AVX512-BF16, AMX) holds
ISA_AMX = 0x3EF  # dnnl_cpu_isa_t avx10_1_512_amx: the bits every ISA with AMX tiles holds
# auto without AMX: the bf16 gemm's rate over fp32's that makes bf16 worth it (2x gave the models 1.2-1.5x)
AUTO_BF16_SPEEDUP = 1.5


def kernels_isa() -> int:
    """The effective dnnl_cpu_isa_t of the kernels' private libdnnl, 0 without the kernels."""
    path = cpu_kernels.library() if ms.get_context("device_target") == "CPU" else None
    if path is None or not ctypes.CDLL(path).KernelsBf16Ready():
        return 0
    return ctypes.CDLL(path).KernelsIsa()


def has_bf16(isa: int) -> bool:
    return isa & ISA_AVX512_CORE_BF16 == ISA_AVX512_CORE_BF16


def has_amx(isa: int) -> bool:
    return isa & ISA_AMX == ISA_AMX


def measured_bf16_speedup() -> float:
    """matmul_peaks.bf16_speedup(), measured on the first call on this CPU and kernel build and kept beside the
    kernels: later runs, a resumed run and every rank of a distributed one then choose alike."""
    path = os.path.splitext(cpu_kernels.library())[0] + ".bf16_speedup.json"
    try:
        with open(path, encoding="utf-8") as f:
            return float(json.load(f)["bf16_speedup"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    speedup = matmul_peaks.bf16_speedup()
    try:
        write_json(path, {"bf16_speedup": speedup})
    except OSError:
        pass
    return speedup


# auto's measurement of the run's workload: a callable giving its bf16 speed over its fp32 speed, and what it times
NetworkTiming = Tuple[Callable[[], float], str]


def choose(requested: str, network: Optional[NetworkTiming] = None) -> Tuple[str, str]:
    """The precision to run for `requested` (fp32, bf16 or auto: the config loader checks) on this device and CPU,
    and why; auto with bf16 arithmetic measures `network` where given."""
    if requested == "fp32":
        return "fp32", "asked for"
    device = ms.get_context("device_target")
    if device != "CPU":
        if requested == "bf16":
            raise UserError(f"precision bf16 is for the CPU kernels; on {device} use amp_level")
        return "fp32", f"auto on {device} (amp_level sets mixed precision there)"
    isa = kernels_isa()
    cpu = isa_name(isa) if isa else "no CPU kernels (src/cpu/cpu_kernels.py did not build)"
    if requested == "bf16":
        if not has_bf16(isa):
            raise UserError(f"precision bf16 needs a CPU with AVX512-BF16 or AMX-BF16 and the CPU kernels (here: "
                            f"{cpu}); use --precision auto or fp32")
        return "bf16", f"asked for: the kernels' oneDNN runs {cpu}"
    if has_bf16(isa) and network is not None:
        speedup = network[0]()
        timed = f"{network[1]} measured {speedup:.2f}x as fast in bf16 as in fp32 here ({cpu})"
        return ("bf16" if speedup > 1 else "fp32"), f"auto: {timed}"
    if has_amx(isa):
        return "bf16", f"auto: the kernels' oneDNN runs {cpu} (AMX)"
    if has_bf16(isa):
        speedup = measured_bf16_speedup()
        gemm = f"its bf16 gemm measured {speedup:.2f}x the fp32 sgemm's rate here"
        if speedup >= AUTO_BF16_SPEEDUP:
            return "bf16", f"auto: the kernels' oneDNN runs {cpu}, no AMX; {gemm}"
        return "fp32", f"auto: {cpu} has bf16 dot products but no AMX, and {gemm} (bf16 from {AUTO_BF16_SPEEDUP}x)"
    return "fp32", f"auto: no bf16 arithmetic here ({cpu})"


def set_precision(precision: str) -> None:
    """Make the kernels' matrix products run in `precision` ("fp32" or "bf16") from now on, process-wide."""
    path = cpu_kernels.library() if ms.get_context("device_target") == "CPU" else None
    if path is not None:
        ctypes.CDLL(path).KernelsSetPrecision(int(precision == "bf16"))


def setup_precision(config, log: Callable[[str], None], network: Optional[NetworkTiming] = None) -> str:
    """Choose config.precision's precision (auto timing `network`), set it and log which one runs and why;
    returns it."""
    precision, why = choose(config.precision, network)
    set_precision(precision)
    log(f"precision {precision} ({why})")
    return precision

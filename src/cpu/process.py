"""The process settings of a CPU run, made by one explicit call at the start of each entry point.

- GOMP_SPINCOUNT=10000 (unless set) for the OpenMP runtime that MindSpore and the
  CPU kernels (src/cpu/cpu_kernels.py) share. libgomp reads it once, when cv2 or
  MindSpore loads it, so the call comes before those imports. With libgomp's
  default the kernels' idle threads spin for about a millisecond on the cores
  that MindSpore's own ops need next; with passive threads every kernel pays a
  slow wake-up.
- MindSpore's oneDNN capped at AVX2 (src/cpu/onednn.py), before any network runs.

Importing this module changes nothing; `set_up_process` does.
"""
import os


def set_up_process() -> None:
    """The OpenMP spin count, then the oneDNN cap (this imports MindSpore)."""
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    from src.cpu.onednn import limit_mindspore_isa
    limit_mindspore_isa()

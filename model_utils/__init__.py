"""Config loading and device/cloud adapters.

Importing the package sets GOMP_SPINCOUNT=10000 (unless it is set) for the
OpenMP runtime that MindSpore and the CPU kernels (src/cpu_kernels.py) share,
so the scripts import it before cv2 and MindSpore load that runtime.
With libgomp's default the kernels' idle threads spin for about a millisecond
on the cores that MindSpore's own ops need next (YOLOv3-MobileNetV2's depthwise
convolutions, which stay MindSpore ops, ran the forward slower than without
kernels); with passive threads every kernel pays a slow wake-up.
"""
import os

os.environ.setdefault("GOMP_SPINCOUNT", "10000")

"""Config loading and device/cloud adapters.

Importing the package sets GOMP_SPINCOUNT=10000 (unless it is set) for the
OpenMP runtime that MindSpore and the CPU kernels (src/cpu_kernels.py) share,
so the inference scripts import it before cv2 and MindSpore load that runtime.
With libgomp's default the kernels' idle threads spin for about a millisecond
on the cores that MindSpore's own ops need next; with passive threads every
kernel pays a slow wake-up. Measured at 416, batch 1, forward with kernels
(the default spin / 10x shorter / 100x shorter): YOLOv3-MobileNetV2, whose
depthwise convolutions stay MindSpore ops, 268 / 178 / 187 ms; yolov3-tiny
62 / 64 / 64 ms; passive threads 70-88 ms for yolov3-tiny.
"""
import os

os.environ.setdefault("GOMP_SPINCOUNT", "10000")

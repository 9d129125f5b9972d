"""Shared fixtures: paths to ../shared, the darknet reference, and script runners."""
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
DARKNET = os.path.join(SHARED, "darknet")
COCO_TINY = os.path.join(SHARED, "data", "coco_tiny")
TINY_CFG = os.path.join(REPO, "configs", "yolov3_tiny.yaml")
MBV2_CFG = os.path.join(REPO, "configs", "yolov3_mobilenetv2.yaml")
sys.path.insert(0, REPO)


def _need(what: str, ok: bool):
    if not ok:
        if os.environ.get("YOLO_REQUIRE_SHARED") == "1":
            pytest.fail(f"{what} is required in CI but missing")
        pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def shared():
    _need("../shared", os.path.isdir(DARKNET) and os.path.isdir(COCO_TINY))
    return SHARED


@pytest.fixture(scope="session")
def ref_python(shared):
    """A Python whose OpenCV still has the darknet importer (see .ci/run)."""
    exe = os.environ.get("DARKNET_REF_PYTHON", "")
    _need("DARKNET_REF_PYTHON (a venv with opencv-python-headless<5)", bool(exe) and os.path.exists(exe))
    return exe


def run_script(script: str, *args: str, cwd: str = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run one of the repo's scripts (or any argv list) as a user would."""
    argv = [sys.executable, os.path.join(REPO, script)] if script.endswith(".py") else [script]
    proc = subprocess.run(argv + list(args), cwd=cwd or REPO, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def reference(ref_python: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([ref_python, os.path.join(SHARED, "tools", "darknet_reference.py")] + list(args),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="session")
def tiny_ckpt(shared, tmp_path_factory):
    """The real darknet yolov3-tiny weights, converted once."""
    out = str(tmp_path_factory.mktemp("tiny") / "yolov3_tiny.ckpt")
    run_script("convert_weight.py", "--config_path", TINY_CFG, "--input_file",
               os.path.join(DARKNET, "yolov3-tiny.weights"), "--output_file", out)
    return out


@pytest.fixture(scope="session")
def val_blob(shared, tmp_path_factory):
    """One real val2017 image as a stretched 416x416 RGB NCHW blob in [0, 1]."""
    import cv2
    from src.transforms import preprocess
    name = sorted(os.listdir(os.path.join(COCO_TINY, "val2017")))[0]
    chw, _ = preprocess(cv2.imread(os.path.join(COCO_TINY, "val2017", name)), 416, use_letterbox=False)
    path = str(tmp_path_factory.mktemp("blob") / "blob.npy")
    np.save(path, chw[None])
    return path

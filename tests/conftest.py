"""Shared fixtures: paths to ../shared, darknet's weights and cfgs, the darknet reference, and script runners.

Without ../shared the darknet parity tests still run: yolov3-tiny's weights come as the demo gets them
(src/formats/pretrained.py, cached), the cfgs and the reference runner are in tests/darknet/, and the reference
environment is created on first use in the project cache. Only what needs the COCO subset skips.
"""
import hashlib
import os
import shutil
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
DARKNET_CFGS = os.path.join(REPO, "tests", "darknet")
OPENCV_REFERENCE = os.path.join(DARKNET_CFGS, "opencv_reference.py")
SAMPLES = os.path.join(REPO, "samples")
REF_REQUIREMENTS = ["opencv-python-headless<5", "numpy", "pycocotools"]
sys.path.insert(0, REPO)
from src.cpu.process import set_up_process  # noqa: E402

set_up_process()  # as every entry point does


def _need(what: str, ok: bool):
    if not ok:
        if os.environ.get("YOLO_REQUIRE_SHARED") == "1":
            pytest.fail(f"{what} is required in CI but missing")
        pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def shared():
    _need("../shared (the COCO subset and darknet's files)", os.path.isdir(DARKNET) and os.path.isdir(COCO_TINY))
    return SHARED


@pytest.fixture(scope="session")
def tiny_weights_file() -> str:
    """darknet's yolov3-tiny.weights: ../shared's copy, else fetched and cached as the demo does."""
    if os.path.isfile(os.path.join(DARKNET, "yolov3-tiny.weights")):
        return os.path.join(DARKNET, "yolov3-tiny.weights")
    from src.errors import UserError
    from src.formats.pretrained import tiny_weights
    lines = []
    try:
        return tiny_weights(log=lines.append)
    except UserError as e:
        _need(f"yolov3-tiny.weights (cannot download them, registry unreachable? {' / '.join(lines[-2:]) or e})",
              False)


def _reference_venv() -> str:
    """A venv with REF_REQUIREMENTS in the project cache, created on first use (then reused)."""
    from src.fileio import cache_dir
    key = hashlib.sha256(" ".join(REF_REQUIREMENTS).encode()).hexdigest()[:8]
    venv = os.path.join(cache_dir(), f"darknet-reference-venv-{key}")
    exe = os.path.join(venv, "bin", "python")
    if os.path.exists(exe):
        return exe
    tmp = f"{venv}.{os.getpid()}.tmp"
    tmp_exe = os.path.join(tmp, "bin", "python")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for argv in ([sys.executable, "-m", "venv", tmp],
                     [tmp_exe, "-m", "pip", "install", "-q", *REF_REQUIREMENTS],
                     [tmp_exe, "-c", "import cv2; cv2.dnn.readNetFromDarknet"]):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
            if proc.returncode:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                _need(f"the darknet reference venv ({' '.join(argv[1:])} failed, registry unreachable? {last})",
                      False)
        try:
            os.rename(tmp, venv)
        except OSError:
            if not os.path.exists(exe):  # not another run that made it first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exe


@pytest.fixture(scope="session")
def ref_python() -> str:
    """A Python whose OpenCV still has the darknet importer: DARKNET_REF_PYTHON (CI, see .ci/run), else a
    venv with opencv-python-headless<5 and numpy made on first use in the project cache."""
    exe = os.environ.get("DARKNET_REF_PYTHON", "")
    if exe:
        _need(f"DARKNET_REF_PYTHON={exe}", os.path.exists(exe))
        return exe
    return _reference_venv()


def darknet_cfg(name: str) -> str:
    """darknet's own cfg file (tests/darknet/README.md says where they come from)."""
    return os.path.join(DARKNET_CFGS, f"{name}.cfg")


def opencv_reference(ref_python: str, *args: str) -> subprocess.CompletedProcess:
    """tests/darknet/opencv_reference.py in the reference venv."""
    proc = subprocess.run([ref_python, OPENCV_REFERENCE] + list(args), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


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
def sample_blob(tmp_path_factory):
    """One of samples/ as a stretched 416x416 RGB NCHW blob in [0, 1]."""
    import cv2
    from src.data.transforms import preprocess
    name = sorted(f for f in os.listdir(SAMPLES) if f.endswith(".jpg"))[0]
    chw, _ = preprocess(cv2.imread(os.path.join(SAMPLES, name)), 416, use_letterbox=False)
    path = str(tmp_path_factory.mktemp("blob") / "blob.npy")
    np.save(path, chw[None])
    return path


def pytest_terminal_summary(terminalreporter):
    """Name the skipped tests under their reason (a plain -q run prints only how many)."""
    by_reason = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        by_reason.setdefault(reason.replace("Skipped: ", "", 1), []).append(report.nodeid)
    for reason, tests in sorted(by_reason.items()):
        terminalreporter.write_line(f"skipped ({len(tests)}), {reason}:")
        for nodeid in tests:
            terminalreporter.write_line(f"    {nodeid}")


def copy_as_cloned(root) -> str:
    """A copy of the repository at `root` as a user's fresh clone (no ../shared beside it)."""
    try:  # git's tracked files and those not yet added but not ignored
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(".git", "__pycache__", "outputs", "train", "eval",
                                                                  "train_parallel", "build"))
        return str(root)
    for name in listed.split("\0"):
        if name and os.path.isfile(os.path.join(REPO, name)):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.join(REPO, name), root / name)
    return str(root)


@pytest.fixture(scope="session")
def user_checkout(tmp_path_factory) -> str:
    """The user's clone where the README's commands run as typed, with relative paths; what they write lands
    there, not in this checkout."""
    return copy_as_cloned(tmp_path_factory.mktemp("clone") / "yolov3")


@pytest.fixture(scope="session")
def readme_runs(user_checkout, tiny_weights_file, tmp_path_factory) -> dict:
    """The commands of README.md and docs/usage.md run once as typed in the user's clone (tests/readme_commands.py):
    command -> (as typed, its CompletedProcess, when it started)."""
    import readme_commands
    values = readme_commands.placeholders(str(tmp_path_factory.mktemp("readme_data")), tiny_weights_file)
    return readme_commands.run_all(user_checkout, values)


def shapes_set(tmp_path_factory, num_train: int, num_val: int, size: int, min_size: int, max_size: int) -> str:
    """A small src.data.synthetic data set in a fresh temporary folder."""
    from src.data.synthetic import make_dataset
    root = tmp_path_factory.mktemp(f"shapes{num_train}_{size}")
    make_dataset(str(root), num_train, num_val, size=size, min_size=min_size, max_size=max_size)
    return str(root)


def tiny_train_args(data: str, out: str, shape: int, batch: int, workers: int, log_interval: int, *extra: str):
    """train.py options for yolov3-tiny on a small set."""
    return ["--config_path", TINY_CFG, "--data_dir", data, "--training_shape", str(shape), "--per_batch_size",
            str(batch), "--ckpt_path", out, "--log_interval", str(log_interval), "--num_parallel_workers",
            str(workers), *extra]


THREE_CLASSES = ["person", "car", "bottle"]  # COCO ids 1, 3, 44


@pytest.fixture(scope="session")
def three_class(tiny_ckpt, tmp_path_factory):
    """A 3-class yolov3-tiny checkpoint with its model card (the converted COCO model's person, car and bottle
    outputs, cut from its heads; ids 1, 2, 3) and coco_tiny's val2017 with only those categories, numbered 1..3
    as a labelling tool numbers them: (checkpoint, data dir)."""
    import json
    import mindspore as ms
    from model_utils.config import load_config
    from src.formats.checkpoint import save_checkpoint, state_checksum
    from src.formats.model_card import card_of_config, checkpoint_entry
    root = tmp_path_factory.mktemp("three_class")
    ann = json.loads(open(os.path.join(COCO_TINY, "annotations", "instances_val2017.json")).read())
    coco_id = {c["name"]: c["id"] for c in ann["categories"]}
    new_id = {coco_id[n]: k + 1 for k, n in enumerate(THREE_CLASSES)}
    ann["categories"] = [{"id": k + 1, "name": n, "supercategory": "thing"} for k, n in enumerate(THREE_CLASSES)]
    ann["annotations"] = [dict(a, category_id=new_id[a["category_id"]]) for a in ann["annotations"]
                          if a["category_id"] in new_id]
    (root / "data" / "annotations").mkdir(parents=True)
    (root / "data" / "annotations" / "instances_val2017.json").write_text(json.dumps(ann))
    os.symlink(os.path.join(COCO_TINY, "val2017"), root / "data" / "val2017")
    config = load_config(["--config_path", TINY_CFG, "--num_classes", "3", "--labels", ",".join(THREE_CLASSES),
                          "--coco_ids", "1,2,3", "--input_centering", "False"])
    coco_labels = [list(load_config(["--config_path", TINY_CFG]).coco_ids).index(coco_id[n]) for n in THREE_CLASSES]
    rows = np.concatenate([np.arange(5), 5 + np.array(coco_labels)])  # box, objectness, the 3 classes
    params = {}
    for name, value in ms.load_checkpoint(tiny_ckpt).items():
        if not isinstance(value, ms.Parameter):
            continue
        array = value.asnumpy()
        if name.startswith("head") and name.endswith((".conv.weight", ".conv.bias")):
            array = array.reshape((3, 85) + array.shape[1:])[:, rows].reshape((24,) + array.shape[1:])
        params[name] = ms.Parameter(ms.Tensor(array), name=name)
    card = card_of_config(config).with_checksum(state_checksum(params))
    path = str(root / "three.ckpt")
    save_checkpoint(params, path, checkpoint_entry(card))
    return path, str(root / "data")

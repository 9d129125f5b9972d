"""The launchers in scripts/ as their usage text shows them, typed from the repository's root and from another
folder, with relative paths: every path means what it meant where the user typed it, although the launchers work
in ./train/, ./eval/ or ./train_parallel/. CPU launchers run to the end (--device_target CPU); the GPU and Ascend
ones as far as this machine goes: their config and file checks pass and the device is what stops them."""
import json
import os
import subprocess
import sys

import pytest

from test_multinode import rank_table, started

BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), PYTHON=sys.executable)
SMALL = ["--max_epoch", "1", "--training_shape", "64", "--per_batch_size", "2", "--num_parallel_workers", "1"]
DEVICE_ERROR = "is not usable here: Unsupported device target"


@pytest.fixture(scope="module")
def clone(user_checkout):
    """The user's clone with a 4 + 2 image data set in it, at ./data."""
    from src.data.synthetic import make_dataset
    if not os.path.isdir(os.path.join(user_checkout, "data")):
        make_dataset(os.path.join(user_checkout, "data"), 4, 2, size=64, min_size=12, max_size=30)
    return user_checkout


@pytest.fixture
def elsewhere(clone, tmp_path):
    """Another folder, where `data`, `configs/` and a `weights.ckpt` are what the user's relative paths name."""
    (tmp_path / "weights.ckpt").write_bytes(b"")
    os.symlink(os.path.join(clone, "data"), tmp_path / "data")
    os.symlink(os.path.join(clone, "configs"), tmp_path / "configs")
    return tmp_path


def launch(cwd, script, *args, env=None):
    proc = subprocess.run(["bash", script, *args], cwd=cwd, env=dict(ENV, **(env or {})), capture_output=True,
                          text=True, timeout=600)
    return proc


def ok(proc, log=None):
    detail = open(log).read()[-3000:] if log and os.path.exists(log) else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + detail


def test_standalone_train_then_eval_from_the_repository_root(clone):
    """The issue's own commands: the usage text's example with --device_target CPU, then its checkpoint scored."""
    proc = launch(clone, "scripts/run_standalone_train.sh", "data", "--config_path", "configs/yolov3_tiny.yaml",
                  "--device_target", "CPU", *SMALL)
    ok(proc, os.path.join(clone, "train", "log.txt"))
    assert proc.stdout.startswith("training on CPU device 0; log: ")
    ckpt = os.path.join("train", "outputs", "ckpt_0", "0-1_2.ckpt")
    assert os.path.isfile(os.path.join(clone, ckpt))
    proc = launch(clone, "scripts/run_eval.sh", "data", ckpt, "--config_path", "configs/yolov3_tiny.yaml",
                  "--device_target", "CPU", "--testing_shape", "64")
    ok(proc, os.path.join(clone, "eval", "log.txt"))
    stats = json.load(open(os.path.join(clone, "eval", "stats.json")))
    assert stats["images"] == 2


def test_standalone_train_fine_tune_and_eval_from_another_folder(clone, tmp_path):
    """Relative --config_path, DATA_DIR, --resume_yolo, --ckpt_path, CKPT and --ann_file, typed in a folder that is
    neither the repository nor the launchers' work folders."""
    from model_utils.config import load_config
    from src.formats.checkpoint import network_parameters, save_checkpoint
    from src.models.spec import ModelSpec
    from src.models.yolo import build_network
    start = os.path.join("weights", "start.ckpt")
    spec = ModelSpec.from_config(load_config(["--config_path", os.path.join(clone, "configs", "yolov3_tiny.yaml")]))
    save_checkpoint(network_parameters(build_network(spec)), str(tmp_path / start))
    repo = os.path.relpath(clone, tmp_path)
    ok(launch(tmp_path, f"{repo}/scripts/run_standalone_train.sh", f"{repo}/data", "--config_path",
              f"{repo}/configs/yolov3_tiny.yaml", "--device_target", "CPU", *SMALL, "--resume_yolo", start,
              "--ckpt_path", "runs/tuned"), tmp_path / "train" / "log.txt")
    log = (tmp_path / "train" / "log.txt").read_text()
    assert f"fine-tuning: loaded 55 parameters from {tmp_path / start}" in log, log[-2000:]
    tuned = os.path.join("runs", "tuned", "ckpt_0", "0-1_2.ckpt")
    assert os.path.isfile(tmp_path / tuned)
    assert os.listdir(tmp_path / "train") == ["log.txt"]  # the checkpoints went where typed
    ok(launch(tmp_path, f"{repo}/scripts/run_eval.sh", f"{repo}/data", tuned, "--config_path",
              f"{repo}/configs/yolov3_tiny.yaml", "--device_target", "CPU", "--testing_shape", "64", "--ann_file",
              f"{repo}/data/annotations/instances_val2017.json"), tmp_path / "eval" / "log.txt")
    assert json.load(open(tmp_path / "eval" / "stats.json"))["images"] == 2


def test_cpu_data_parallel_launcher_from_the_repository_root(clone):
    """(From another folder: test_distributed.py's launcher test.)"""
    proc = launch(clone, "scripts/run_distribute_train_cpu.sh", "data", "2", "--config_path",
                  "configs/yolov3_tiny.yaml", *SMALL, "--per_batch_size", "1", "--is_save_on_master", "0",
                  env={"MASTER_PORT": "8151"})
    ok(proc, os.path.join(clone, "train_parallel", "worker_1.log"))
    for rank in (0, 1):
        assert os.path.isfile(os.path.join(clone, "train_parallel", "outputs", f"ckpt_{rank}", f"{rank}-1_2.ckpt"))


@pytest.mark.parametrize("script, positional", [
    ("run_standalone_train.sh", ["data"]),
    ("run_standalone_train_gpu.sh", ["data"]),
    ("run_eval.sh", ["data", "weights.ckpt"]),
    ("run_eval_gpu.sh", ["data", "weights.ckpt"]),
])
def test_device_launchers_read_the_users_paths(elsewhere, clone, script, positional):
    """Off their device these stop at the device, after the config file and every path were found where the user
    typed them; a path that is not there is named as the user's folder makes it."""
    tmp_path = elsewhere
    script = os.path.join(clone, "scripts", script)
    proc = launch(tmp_path, script, *positional, "--config_path", "configs/yolov3_tiny.yaml", "--pretrained_backbone",
                  "weights.ckpt")
    assert proc.returncode == 1 and DEVICE_ERROR in proc.stderr.strip().splitlines()[-1], proc.stderr
    proc = launch(tmp_path, script, *positional, "--config_path", "configs/yolov3_tiny.yaml", "--pretrained_backbone",
                  "missing.ckpt")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: pretrained_backbone not found: "
                                                           f"{tmp_path / 'missing.ckpt'} (command line)")


def test_gpu_data_parallel_launcher_reads_the_users_paths(elsewhere, clone):
    proc = launch(elsewhere, os.path.join(clone, "scripts", "run_distribute_train_gpu.sh"), "data", "1",
                  "--config_path", "configs/yolov3_tiny.yaml", "--pretrained_backbone", "weights.ckpt", *SMALL,
                  env={"MASTER_PORT": "8155"})
    log = (elsewhere / "train_parallel" / "worker_0.log").read_text()
    assert proc.returncode != 0 and f"error: device_target GPU {DEVICE_ERROR}" in log, log[-2000:]


def test_ascend_rank_table_launcher_passes_absolute_paths(elsewhere, clone):
    table = rank_table(elsewhere / "table.json", "198.51.100.1")
    proc = launch(elsewhere, os.path.join(clone, "scripts", "run_distribute_train.sh"), "data", "table.json",
                  "--config_path", "configs/yolov3_tiny.yaml", "--resume_yolo=weights.ckpt",
                  env={"DRY_RUN": "1", "SERVER_ID": "198.51.100.1"})
    assert proc.returncode == 0, proc.stderr
    runs = started(proc.stdout)
    assert len(runs) == 2
    for env, cmd in runs:
        assert env["RANK_TABLE_FILE"] == table
        assert cmd[cmd.index("--config_path") + 1] == str(elsewhere / "configs" / "yolov3_tiny.yaml")
        assert f"--resume_yolo={elsewhere / 'weights.ckpt'}" in cmd
        assert cmd[cmd.index("--data_dir") + 1] == str(elsewhere / "data")

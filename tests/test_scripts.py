"""The bash launchers check their arguments: usage and a non-zero exit on wrong ones."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = ["run_standalone_train.sh", "run_standalone_train_gpu.sh", "run_distribute_train.sh",
           "run_distribute_train_gpu.sh", "run_distribute_train_cpu.sh", "run_eval.sh", "run_eval_gpu.sh"]


def launch(script, *args, cwd):
    return subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("script", SCRIPTS)
def test_usage_on_missing_arguments(script, tmp_path):
    proc = launch(script, cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.startswith("usage: bash scripts/" + script)
    assert proc.stderr.strip().splitlines()[-1].startswith("error: missing")


@pytest.mark.parametrize("script, args, message", [
    ("run_standalone_train.sh", ["/no/such/dir"], "DATA_DIR not found"),
    ("run_distribute_train.sh", ["{tmp}", "/no/table.json"], "RANK_TABLE_FILE not found"),
    ("run_distribute_train_cpu.sh", ["{tmp}", "two"], "WORKER_NUM must be a positive integer"),
    ("run_distribute_train_gpu.sh", ["{tmp}", "0"], "DEVICE_NUM must be a positive integer"),
    ("run_eval.sh", ["{tmp}", "/no/model.ckpt"], "CKPT not found"),
])
def test_wrong_arguments(script, args, message, tmp_path):
    proc = launch(script, *[a.format(tmp=tmp_path) for a in args], cwd=tmp_path)
    assert proc.returncode != 0 and "usage:" in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    assert not os.listdir(tmp_path)


def test_rank_table_without_devices(tmp_path):
    table = tmp_path / "table.json"
    table.write_text('{"version": "1.0", "server_list": []}')
    proc = launch("run_distribute_train.sh", str(tmp_path), str(table), cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == f"error: rank table {table}: it lists no device"


def test_scratch_check_stops_at_the_first_failing_run(tmp_path):
    """tools/scratch_check.sh: usage without OUT_DIR; a train.py error ends it with that error's line, no AP line."""
    script = os.path.join(REPO, "tools", "scratch_check.sh")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["bash", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and proc.stderr.startswith("usage:")
    proc = subprocess.run(["bash", script, str(tmp_path / "out"), "--precision", "fp8"], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == "plain: train.py failed: error: precision must be one of fp32, bf16, auto, got 'fp8'"
    assert len(os.listdir(tmp_path / "out" / "set_plain" / "train2017")) == 300  # the set it made stays for a rerun

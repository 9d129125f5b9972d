"""ModelArts: a clear error without moxing; with it, data and weights copied in and results out."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from conftest import COCO_TINY, REPO, TINY_CFG, run_script
from test_cli_errors import assert_clean_error


def test_without_moxing_is_a_clear_error(tmp_path):
    proc = run_script("eval.py", "--enable_modelarts", "True", "--data_url", str(tmp_path), check=False)
    assert_clean_error(proc, "needs the moxing package")


def test_copies_in_and_out(tiny_ckpt, tmp_path):
    obs_data, obs_ckpt, obs_out = tmp_path / "obs_data", tmp_path / "obs_ckpt", tmp_path / "obs_out"
    shutil.copytree(COCO_TINY, obs_data)
    obs_ckpt.mkdir()
    shutil.copy(tiny_ckpt, obs_ckpt / "tiny.ckpt")
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "tests", "fake_moxing"))
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "eval.py"), "--config_path", TINY_CFG,
                           "--enable_modelarts", "True", "--data_url", str(obs_data), "--checkpoint_url",
                           str(obs_ckpt), "--train_url", str(obs_out), "--data_path", str(cache / "data"),
                           "--load_path", str(cache / "ckpt"), "--output_path", str(cache / "out"),
                           "--pretrained", "tiny.ckpt", "--eval_dir", "eval"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (cache / "data" / "annotations" / "instances_val2017.json").exists()
    stats = json.loads((obs_out / "eval" / "stats.json").read_text())
    assert stats["images"] == 80 and stats["AP"] > 0.1


@pytest.fixture
def fake_mox(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "tests", "fake_moxing"))
    import moxing
    return moxing


def test_waiters_ignore_a_marker_left_by_an_earlier_job(fake_mox, tmp_path, monkeypatch):
    from model_utils.moxing_adapter import sync
    from src.errors import UserError
    src, dst = tmp_path / "obs", tmp_path / "cache"
    src.mkdir()
    (src / "a.txt").write_text("this job's data")
    dst.mkdir()
    (dst / ".modelarts_sync_done").write_text("old")
    (dst / ".modelarts_sync_done.earlier-job").write_text("old")
    monkeypatch.setenv("YOLO_JOB_TOKEN", "this-job")
    with pytest.raises(UserError, match="timed out waiting"):
        sync(fake_mox, str(src), str(dst), copier=False, timeout_s=1.5)

    copier = threading.Timer(1.0, sync, (fake_mox, str(src), str(dst), True))
    copier.start()
    sync(fake_mox, str(src), str(dst), copier=False, timeout_s=60)
    assert (dst / "a.txt").read_text() == "this job's data"  # the waiter went on after this job's copy
    copier.join()
    assert sorted(p.name for p in dst.glob(".modelarts_sync_done*")) == [".modelarts_sync_done.this-job"]


@pytest.mark.parametrize("ending", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_outputs_reach_train_url_when_the_run_fails(ending, fake_mox, tmp_path):
    from model_utils.config import load_config
    from model_utils.moxing_adapter import run_with_modelarts
    config = load_config(["--enable_modelarts", "True", "--train_url", str(tmp_path / "obs_out"),
                          "--output_path", str(tmp_path / "out")])

    def failing_run(config):
        ckpt = os.path.join(config.ckpt_path, "ckpt_0", "0-1_4.ckpt")
        os.makedirs(os.path.dirname(ckpt))
        open(ckpt, "w").write("weights")
        raise ending

    with pytest.raises(type(ending)):
        run_with_modelarts(config, failing_run)
    assert (tmp_path / "obs_out" / "outputs" / "ckpt_0" / "0-1_4.ckpt").read_text() == "weights"


def test_preempted_training_reaches_train_url(tmp_path):
    """SIGTERM (what a preempted container gets) during train.py: its checkpoint is copied to train_url."""
    from src.data.synthetic import make_dataset
    make_dataset(str(tmp_path / "obs_data"), 8, 0, size=64, min_size=16, max_size=30)
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "tests", "fake_moxing"))
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), "--config_path", TINY_CFG,
                             "--enable_modelarts", "True", "--data_url", str(tmp_path / "obs_data"),
                             "--train_url", str(tmp_path / "obs_out"), "--data_path", str(tmp_path / "cache" / "data"),
                             "--output_path", str(tmp_path / "cache" / "out"), "--training_shape", "64",
                             "--per_batch_size", "2", "--max_epoch", "50", "--log_interval", "1",
                             "--num_parallel_workers", "1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "iter[2]" in line:
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    saved = os.listdir(tmp_path / "obs_out" / "outputs" / "ckpt_0")
    assert len(saved) == 1 and saved[0].startswith("0-1_")  # the interrupted run's checkpoint, mid epoch 1

"""ModelArts: a clear error without moxing; with it, data and weights copied in and results out."""
import json
import os
import shutil
import subprocess
import sys

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

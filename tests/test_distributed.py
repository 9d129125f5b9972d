"""Data-parallel training and eval over 2 CPU workers (msrun), against single-process runs."""
import json
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from conftest import COCO_TINY, REPO, TINY_CFG, run_script

BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))


def msrun(args, cwd, log_dir="msrun_logs", port="8131"):
    proc = subprocess.run(["msrun", "--worker_num=2", "--local_worker_num=2", f"--master_port={port}",
                           f"--log_dir={log_dir}", "--join=True", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=900)
    logs = "".join(open(os.path.join(cwd, log_dir, f)).read()[-3000:] for f in os.listdir(os.path.join(cwd, log_dir)))
    assert proc.returncode == 0, logs
    return proc


@pytest.fixture(scope="module")
def shapes64(tmp_path_factory):
    from src.data.synthetic import make_dataset
    root = tmp_path_factory.mktemp("shapes64")
    make_dataset(str(root), 64, 8, size=320)
    return str(root)


def test_launcher_trains_two_identical_ranks(shapes64, tmp_path):
    """Typed in another folder than the repository's, with relative paths (from its root: test_launchers.py)."""
    out = tmp_path / "out"
    rel = lambda path: os.path.relpath(path, tmp_path)  # noqa: E731
    proc = subprocess.run(["bash", rel(os.path.join(REPO, "scripts", "run_distribute_train_cpu.sh")), rel(shapes64),
                           "2", "--config_path", rel(TINY_CFG), "--training_shape", "320", "--max_epoch", "1",
                           "--per_batch_size", "4", "--is_save_on_master", "0", "--ckpt_path", "out"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "logs: " in proc.stdout
    ranks = [ms.load_checkpoint(str(out / f"ckpt_{r}" / f"{r}-1_8.ckpt")) for r in (0, 1)]
    assert all(int(c["global_step"].asnumpy()) == 8 for c in ranks)
    names = [n for n in ranks[0] if not n.startswith("optimizer.") and hasattr(ranks[0][n], "asnumpy")
             and n not in ("epoch", "global_step", "num_classes")]
    diff = max(np.abs(ranks[0][n].asnumpy() - ranks[1][n].asnumpy()).max() for n in names)
    assert diff <= 1e-6
    assert os.path.isfile(tmp_path / "train_parallel" / "worker_1.log")


def test_two_workers_of_batch_b_equal_one_process_of_2b(shapes64, tmp_path):
    helper = os.path.join(REPO, "tests", "dist_equivalence.py")
    msrun([helper, shapes64, "2", str(tmp_path / "dist.npz"), "--distributed"], tmp_path, port="8133")
    subprocess.run([sys.executable, helper, shapes64, "4", str(tmp_path / "single.npz")], check=True,
                   capture_output=True, timeout=600)
    single, init = np.load(tmp_path / "single_rank0.npz"), np.load(tmp_path / "single_rank0_init.npz")
    for rank in (0, 1):
        dist = np.load(tmp_path / f"dist_rank{rank}.npz")
        assert sorted(dist.files) == sorted(single.files)
        for name in single.files:
            np.testing.assert_allclose(dist[name], single[name], rtol=1e-4, atol=2e-6, err_msg=name)
    # the steps moved every conv weight well beyond that tolerance, so the equality above says something
    weights = [n for n in single.files if n.endswith("conv.weight")]
    assert len(weights) == 13
    for name in weights:
        assert np.abs(single[name] - init[name]).max() > 100 * (2e-6 + 1e-4 * np.abs(init[name]).max()), name


def test_distributed_eval_equals_single_process(tiny_ckpt, tmp_path):
    args = ["--config_path", TINY_CFG, "--data_dir", COCO_TINY, "--pretrained", tiny_ckpt]
    run_script("eval.py", *args, "--eval_dir", str(tmp_path / "single"))
    msrun([os.path.join(REPO, "eval.py"), *args, "--eval_dir", str(tmp_path / "dist"), "--is_distributed", "1"],
          tmp_path, port="8135")
    single = json.loads((tmp_path / "single" / "stats.json").read_text())
    dist = json.loads((tmp_path / "dist" / "stats.json").read_text())
    single.pop("seconds")
    dist.pop("seconds")
    assert dist == single
    assert sorted(os.listdir(tmp_path / "dist")) == ["pr_curve.png", "predictions.json", "stats.json"]
    key = lambda r: (r["image_id"], r["category_id"], -r["score"], r["bbox"])  # noqa: E731
    single_rows, dist_rows = (sorted(json.loads((tmp_path / d / "predictions.json").read_text()), key=key)
                              for d in ("single", "dist"))
    assert dist_rows == single_rows and len(single_rows) > 1000

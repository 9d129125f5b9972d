"""train.py end to end on a small synthetic set: checkpoints, resume, Ctrl-C, errors, then eval."""
import json
import os
import re
import signal
import subprocess
import sys

import mindspore as ms
import pytest

from conftest import REPO, TINY_CFG, run_script, shapes_set, tiny_train_args
from src.models.spec import ModelSpec
from test_cli_errors import assert_clean_error

LOG_LINE = re.compile(r"epoch\[\d+\], iter\[\d+\], loss:\d+\.\d{6}, fps:\d+\.\d{2} imgs/sec, lr:\d\.\d{6}")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return shapes_set(tmp_path_factory, 16, 6, 128, 24, 50)


def train_args(data, out, *extra):
    return tiny_train_args(data, out, 128, 4, 2, 2, *extra)


def ckpts(out):
    folder = os.path.join(out, "ckpt_0")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_train_resume_and_eval(shapes, tmp_path):
    """With momentum SGD (the tiny config's AdamWeightDecay resumes in test_resume.py)."""
    out = str(tmp_path / "run")
    sgd = ("--optimizer", "momentum")
    proc = run_script("train.py", *train_args(shapes, out, "--max_epoch", "2", *sgd))
    assert LOG_LINE.search(proc.stdout), proc.stdout[-2000:]
    assert ckpts(out) == ["0-1_4.ckpt", "0-2_8.ckpt"]
    ckpt = ms.load_checkpoint(os.path.join(out, "ckpt_0", "0-2_8.ckpt"))
    assert int(ckpt["global_step"].asnumpy()) == 8 and int(ckpt["epoch"].asnumpy()) == 1
    card = json.loads(ckpt["model_card"])
    assert card["num_classes"] == 3 and card["names"] == ["circle", "square", "triangle"]
    assert card["category_ids"] == [1, 2, 3] and any(k.startswith("optimizer.moments.") for k in ckpt)

    again = run_script("train.py", *train_args(shapes, out, "--max_epoch", "2", *sgd), check=False)
    assert_clean_error(again, "already holds checkpoints of another run")
    other = run_script("train.py", *train_args(shapes, out, "--max_epoch", "3", "--resume", "True", "--optimizer",
                                               "adamw"), check=False)
    assert_clean_error(other, "has no adamw optimiser state", "resume it with the --optimizer it was trained with")
    bare = tmp_path / "bare"  # weights only, no optimiser state at all
    (bare / "ckpt_0").mkdir(parents=True)
    weights = [{"name": n, "data": v} for n, v in ckpt.items()
               if isinstance(v, ms.Parameter) and not n.startswith("optimizer.")]
    ms.save_checkpoint(weights, str(bare / "ckpt_0" / "0-2_8.ckpt"))
    proc = run_script("train.py", *train_args(shapes, str(bare), "--max_epoch", "3", "--resume", "True", *sgd),
                      check=False)
    assert_clean_error(proc, "has no momentum optimiser state", "it cannot be resumed")

    run_script("train.py", *train_args(shapes, out, "--max_epoch", "3", "--resume", "True", *sgd))
    assert "0-3_12.ckpt" in ckpts(out)
    resumed = ms.load_checkpoint(os.path.join(out, "ckpt_0", "0-3_12.ckpt"))
    assert int(resumed["optimizer.global_step"].asnumpy().reshape(-1)[0]) == 12

    run_script("eval.py", "--config_path", TINY_CFG, "--data_dir", shapes, "--pretrained",
               os.path.join(out, "ckpt_0", "0-3_12.ckpt"), "--testing_shape", "128", "--eval_dir",
               str(tmp_path / "eval"))
    stats = json.loads((tmp_path / "eval" / "stats.json").read_text())
    assert stats["images"] == 6
    assert_chart(tmp_path / "eval" / "pr_curve.png")

    rows = [json.loads(line) for line in open(os.path.join(out, "metrics_rank0.jsonl"))]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
    assert {"step", "epoch", "loss", "box_loss", "obj_loss", "cls_loss", "lr", "images_per_sec"} <= set(rows[0])
    for r in rows:
        assert r["box_loss"] > 0 and r["obj_loss"] > 0 and r["cls_loss"] > 0
        assert r["box_loss"] + r["obj_loss"] + r["cls_loss"] == pytest.approx(r["loss"], rel=1e-4)
    plots = subprocess.run([sys.executable, "-m", "src.engine.plots", os.path.join(out, "metrics_rank0.jsonl"),
                            "--out_dir", str(tmp_path / "plots")], cwd=REPO, capture_output=True, text=True)
    assert plots.returncode == 0, plots.stderr
    assert_chart(tmp_path / "plots" / "loss.png")
    assert_chart(tmp_path / "plots" / "lr.png")


def test_auto_anchor_trains_with_fitted_anchors_that_the_checkpoint_carries(shapes, tmp_path):
    from model_utils.config import load_config
    from src.data.anchors import fit_to_training_set
    from src.engine.detector import build_detection_model
    out = str(tmp_path / "run")
    proc = run_script("train.py", *train_args(shapes, out, "--max_epoch", "1", "--auto_anchor", "True"))
    config = load_config(["--config_path", TINY_CFG, "--training_shape", "128"])
    fitted, fit, config_fit, _ = fit_to_training_set(os.path.join(shapes, "annotations", "instances_train2017.json"),
                                                     config)
    assert fit > config_fit and f"training with anchor_scales {fitted}" in proc.stdout + proc.stderr
    path = os.path.join(out, "ckpt_0", "0-1_4.ckpt")
    assert json.loads(ms.load_checkpoint(path)["model_card"])["anchors"] == fitted != config.anchor_scales

    # eval, predict and export take the checkpoint's anchors over the config file's, not over the command line's
    card, _ = build_detection_model(load_config(["--config_path", TINY_CFG]), path)
    assert card.spec.anchor_scales == fitted
    config = load_config(["--config_path", TINY_CFG, "--anchor_scales", "1,2,3,4,5,6,7,8,9,10,11,12"])
    card, _ = build_detection_model(config, path)
    assert card.spec.anchor_scales == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]]


def test_input_centering_goes_with_the_weights(shapes, tmp_path):
    """A checkpoint records input_centering and whoever loads it follows; darknet .weights and checkpoints that do
    not say (converted, older) see raw pixels; the command line wins."""
    from model_utils.config import load_config
    from src.engine.detector import build_with_weights
    from src.formats.checkpoint import network_parameters, save_checkpoint
    from src.models.yolo import build_network
    out = str(tmp_path / "run")
    run_script("train.py", *train_args(shapes, out, "--max_epoch", "1", "--input_centering", "True"))
    path = os.path.join(out, "ckpt_0", "0-1_4.ckpt")
    assert json.loads(ms.load_checkpoint(path)["model_card"])["input_centering"] is True

    def centred(argv, weights):
        card, network = build_with_weights(load_config(["--config_path", TINY_CFG, *argv]), weights)
        spec = card.spec
        flags = [c.center_input for _, c in network.cells_and_names() if hasattr(c, "center_input")]
        assert sum(flags) == spec.input_centering  # only the layer on the image, and as the spec says
        return spec.input_centering

    assert centred([], path) and not centred(["--input_centering", "False"], path)
    unsaid = str(tmp_path / "unsaid.ckpt")
    new_model = build_network(ModelSpec.from_config(load_config(["--config_path", TINY_CFG])))
    save_checkpoint(network_parameters(new_model), unsaid)
    assert not centred(["--num_classes", "80"], unsaid)
    config = load_config(["--config_path", TINY_CFG, "--input_centering", "True"])
    spec = ModelSpec.from_config(config)
    assert build_network(spec) and spec.input_centering  # from scratch: the config's


def assert_chart(path):
    import cv2
    img = cv2.imread(str(path))
    assert img is not None and img.shape == (560, 900, 3)
    coloured = (img.max(2).astype(int) - img.min(2)) > 60
    assert coloured.sum() > 200, f"{path} has no coloured curve"


def test_ctrl_c_saves_a_resumable_checkpoint(shapes, tmp_path):
    out = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"),
                             *train_args(shapes, out, "--max_epoch", "50", "--log_interval", "1")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "iter[5]" in line:
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert "error: interrupted" in err
    newest = max(ckpts(out), key=lambda f: int(f.split("_")[-1][:-5]))
    step = int(ms.load_checkpoint(os.path.join(out, "ckpt_0", newest))["global_step"].asnumpy())
    assert step >= 5
    resumed = run_script("train.py", *train_args(shapes, out, "--max_epoch", "4", "--resume", "True"))
    assert f"at global_step {step}" in resumed.stdout and "0-4_16.ckpt" in ckpts(out)


def test_bad_training_data(shapes, tmp_path):
    missing = tmp_path / "no_images"
    (missing / "annotations").mkdir(parents=True)
    (missing / "annotations" / "instances_train2017.json").write_text(
        open(os.path.join(shapes, "annotations", "instances_train2017.json")).read())
    proc = run_script("train.py", *train_args(str(missing), str(tmp_path / "o1"), "--max_epoch", "1"), check=False)
    assert_clean_error(proc, "training image directory not found")
    bad = tmp_path / "bad_ann"
    (bad / "annotations").mkdir(parents=True)
    (bad / "train2017").mkdir()
    (bad / "annotations" / "instances_train2017.json").write_text('{"images": [1, 2')
    proc = run_script("train.py", *train_args(str(bad), str(tmp_path / "o2"), "--max_epoch", "1"), check=False)
    assert_clean_error(proc, "is not valid JSON")
    (bad / "annotations" / "instances_train2017.json").write_text('{"images": [{"id": 1}], "categories": []}')
    proc = run_script("train.py", *train_args(str(bad), str(tmp_path / "o3"), "--max_epoch", "1"), check=False)
    assert_clean_error(proc, "no images with boxes")
    proc = run_script("train.py", *train_args(str(tmp_path / "nowhere"), str(tmp_path / "o4")), check=False)
    assert_clean_error(proc, "data_dir not found")

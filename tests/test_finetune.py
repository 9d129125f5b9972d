"""Fine-tuning to another class set (--resume_yolo / --pretrained_backbone of any class count) and eval
during training (run_eval: best.ckpt, AP in the log and the metrics log)."""
import json
import os
import re

import numpy as np
import pytest

from conftest import COCO_TINY, DARKNET, MBV2_CFG, REPO, TINY_CFG, run_script
from src.models.spec import ModelSpec
from test_cli_errors import assert_clean_error
from test_train import assert_chart


def tiny_config(*args):
    from model_utils.config import load_config
    return load_config(["--config_path", TINY_CFG, *args])


@pytest.mark.parametrize("source, whole_model", [("ckpt", True), ("weights", True), ("ckpt", False)])
def test_coco_weights_load_into_a_3_class_model(tiny_ckpt, source, whole_model):
    """Everything but the heads' output convs comes from the file; those keep a new model's initialisation
    (the bias priors), as a 3-class model built without weights has them."""
    import mindspore as ms
    from src.formats.checkpoint import load_for_finetuning, network_parameters
    from src.models.yolo import build_network
    config = tiny_config("--num_classes", "3")
    ms.set_seed(5)
    spec = ModelSpec.from_config(config)
    fresh = {n: p.asnumpy() for n, p in network_parameters(build_network(spec)).items()}
    ms.set_seed(5)
    network = build_network(spec)
    path = tiny_ckpt if source == "ckpt" else os.path.join(DARKNET, "yolov3-tiny.weights")
    from src.formats.model_card import open_weights
    loaded, reinitialised = load_for_finetuning(network, path, open_weights(path)[1], spec, whole_model)
    heads = ["head1.conv.bias", "head1.conv.weight", "head2.conv.bias", "head2.conv.weight"]
    assert reinitialised == heads and loaded == len(fresh) - 4
    coco = ms.load_checkpoint(tiny_ckpt)
    for name, p in network_parameters(network).items():
        if name in heads:
            np.testing.assert_array_equal(p.asnumpy(), fresh[name])
        else:
            np.testing.assert_array_equal(p.asnumpy(), coco[name].asnumpy())
    bias = network_parameters(network)["head1.conv.bias"].asnumpy().reshape(3, 8)
    assert bias.shape == (3, 8) and (bias[:, 4] < -3).all() and np.allclose(bias[:, 5:], np.log(0.6 / 2.01))


def test_new_heads_take_head_init_std(tiny_ckpt):
    import logging
    import mindspore as ms
    from src.formats.checkpoint import network_parameters
    from src.models.yolo import build_network
    from src.engine.start import load_initial_weights, open_start_weights
    config = tiny_config("--num_classes", "3", "--resume_yolo", tiny_ckpt, "--head_init_std", "0.01")
    spec = ModelSpec.from_config(config)
    network = build_network(spec)
    load_initial_weights(network, spec, config, open_start_weights(config), logging.getLogger("test"))
    params = network_parameters(network)
    for name in ("head1.conv.weight", "head2.conv.weight"):
        assert params[name].asnumpy().std() == pytest.approx(0.01, rel=0.05)
    assert np.allclose(params["head2.conv.bias"].asnumpy().reshape(3, 8)[:, 5:], np.log(0.6 / 2.01))
    coco = ms.load_checkpoint(tiny_ckpt)
    name = "backbone.convs.0.conv.weight"
    np.testing.assert_array_equal(params[name].asnumpy(), coco[name].asnumpy())


def test_another_architecture_is_an_error(tiny_ckpt, tmp_path):
    """Weights that do not say what they are (darknet's, a checkpoint without a card) are taken for the config's
    model: another architecture's is one error."""
    import mindspore as ms
    from test_train import train_args
    from src.data.synthetic import make_dataset
    from src.formats.checkpoint import save_checkpoint
    make_dataset(str(tmp_path / "data"), 4, 0, size=96, min_size=20, max_size=40)
    bare = str(tmp_path / "no_card.ckpt")
    save_checkpoint({k: v for k, v in ms.load_checkpoint(tiny_ckpt).items() if isinstance(v, ms.Parameter)}, bare)
    for cfg, path, message in [(MBV2_CFG, bare, "does not fit yolov3_mobilenetv2"),
                               (MBV2_CFG, os.path.join(DARKNET, "yolov3-tiny.weights"), "has no darknet counterpart"),
                               (os.path.join(REPO, "default_config.yaml"), os.path.join(DARKNET, "yolov3-tiny.weights"),
                                "does not fit yolov3_darknet53")]:
        args = train_args(str(tmp_path / "data"), str(tmp_path / "out"), "--max_epoch", "1", "--resume_yolo", path)
        args[1] = cfg
        proc = run_script("train.py", *args, check=False)
        assert_clean_error(proc, message)
        assert not os.path.exists(tmp_path / "out" / "ckpt_0")


def test_eval_during_training_keeps_the_best_checkpoint(tiny_ckpt, tmp_path):
    """Fine-tune the COCO model on 16 coco_tiny training images with eval on val2017 after each epoch:
    best.ckpt holds the best epoch and its AP, which eval.py on best.ckpt reproduces."""
    import mindspore as ms
    from src.engine.plots import training_curves
    ann = json.loads(open(os.path.join(COCO_TINY, "annotations", "instances_train2017.json")).read())
    ann["images"] = ann["images"][:16]
    keep = {im["id"] for im in ann["images"]}
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] in keep]
    data = tmp_path / "data"
    (data / "annotations").mkdir(parents=True)
    (data / "annotations" / "instances_train2017.json").write_text(json.dumps(ann))
    os.symlink(os.path.join(COCO_TINY, "train2017"), data / "train2017")
    val_ann = os.path.join(COCO_TINY, "annotations", "instances_val2017.json")
    val_dir = os.path.join(COCO_TINY, "val2017")
    out = tmp_path / "run"
    finetune_cfg = os.path.join(REPO, "configs", "yolov3_tiny_finetune.yaml")  # momentum SGD, as README fine-tunes
    proc = run_script("train.py", "--config_path", finetune_cfg, "--data_dir", str(data), "--resume_yolo", tiny_ckpt,
                      "--training_shape", "160", "--per_batch_size", "8", "--max_epoch", "3", "--lr", "0.002",
                      "--warmup_epochs", "0", "--ckpt_path", str(out), "--log_interval", "1", "--run_eval", "True",
                      "--eval_interval", "2", "--eval_start_epoch", "1", "--val_ann_file", val_ann,
                      "--val_image_dir", val_dir, "--testing_shape", "256")
    evals = [(int(e), float(ap), float(ap50)) for e, ap, ap50 in
             re.findall(r"epoch\[(\d+)\], val AP:([0-9.]+), AP50:([0-9.]+)", proc.stdout)]
    assert [e for e, _, _ in evals] == [0, 2], proc.stdout[-3000:]  # after epochs 1 and 3 (1-based)
    assert all(ap > 0.02 for _, ap, _ in evals)
    best_epoch, best_ap, best_ap50 = max(evals, key=lambda r: r[1])
    best = ms.load_checkpoint(str(out / "ckpt_0" / "best.ckpt"))
    assert int(best["epoch"].asnumpy()) == best_epoch
    assert float(best["AP"].asnumpy()) == pytest.approx(best_ap, abs=1e-6)
    assert f"saved best checkpoint {out / 'ckpt_0' / 'best.ckpt'} (epoch[{best_epoch}], AP:{best_ap:.6f})" \
        in proc.stdout

    run_script("eval.py", "--config_path", TINY_CFG, "--pretrained", str(out / "ckpt_0" / "best.ckpt"),
               "--ann_file", val_ann, "--image_dir", val_dir, "--testing_shape", "256",
               "--eval_dir", str(tmp_path / "eval"))
    stats = json.loads((tmp_path / "eval" / "stats.json").read_text())
    assert round(stats["AP"], 6) == pytest.approx(best_ap, abs=1e-6)
    assert round(stats["AP50"], 6) == pytest.approx(best_ap50, abs=1e-6)

    rows = [json.loads(line) for line in open(out / "metrics_rank0.jsonl")]
    logged = [(r["epoch"], r["AP"]) for r in rows if "AP" in r]
    assert [e for e, _ in logged] == [e for e, _, _ in evals]
    assert [ap for _, ap in logged] == pytest.approx([ap for _, ap, _ in evals], abs=1e-6)
    paths = training_curves(str(out / "metrics_rank0.jsonl"), str(tmp_path / "plots"))
    assert str(tmp_path / "plots" / "val_ap.png") in paths
    assert_chart(tmp_path / "plots" / "val_ap.png")


def test_val_categories_checked_before_training(shapes_3, tmp_path):
    from test_train import train_args
    bad = json.loads(open(os.path.join(shapes_3, "annotations", "instances_val2017.json")).read())
    bad["categories"].append({"id": 77, "name": "hexagon"})
    (tmp_path / "val.json").write_text(json.dumps(bad))
    proc = run_script("train.py", *train_args(shapes_3, str(tmp_path / "out"), "--max_epoch", "1", "--run_eval",
                                              "True", "--val_ann_file", str(tmp_path / "val.json")), check=False)
    assert_clean_error(proc, "category 77 'hexagon'")
    assert not os.path.exists(tmp_path / "out" / "ckpt_0")


@pytest.fixture(scope="module")
def shapes_3(tmp_path_factory):
    from src.data.synthetic import make_dataset
    root = tmp_path_factory.mktemp("shapes3")
    make_dataset(str(root), 4, 2, size=96, min_size=20, max_size=40)
    return str(root)

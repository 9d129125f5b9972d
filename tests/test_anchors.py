"""src.data.anchors: k-means (1 - IoU) recovers planted box clusters and reports the current anchors' fit."""
import json
import re
import shlex
import sys

import numpy as np
import yaml

from conftest import TINY_CFG, run_script

# cluster centres (w, h) in network input pixels at --size 320
PLANTED = np.array([[12, 16], [40, 14], [24, 60], [70, 50], [110, 150], [230, 170]], np.float64)


def write_planted(path, image_wh=(640, 480), per_cluster=40, seed=0):
    """Boxes around PLANTED (+-5%), in images that letterboxing to 320 halves (640 x 480 -> 320 x 240)."""
    rng = np.random.default_rng(seed)
    scale = min(320 / image_wh[0], 320 / image_wh[1])
    sizes = np.repeat(PLANTED, per_cluster, axis=0) * rng.uniform(0.95, 1.05, (len(PLANTED) * per_cluster, 2))
    images, anns = [], []
    for i, (w, h) in enumerate(sizes / scale):
        if i % 4 == 0:
            images.append({"id": len(images) + 1, "file_name": f"{i}.jpg", "width": image_wh[0],
                           "height": image_wh[1]})
        anns.append({"id": i + 1, "image_id": len(images), "category_id": 1, "bbox": [1.0, 2.0, w, h],
                     "area": w * h, "iscrowd": 0})
    anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 600, 400], "area": 1,
                 "iscrowd": 1})  # crowd boxes are not fitted
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}, f)
    return sizes


def iou_wh(a, b):
    inter = np.minimum(a[:, None, 0], b[None, :, 0]) * np.minimum(a[:, None, 1], b[None, :, 1])
    return inter / (a[:, None, 0] * a[:, None, 1] + b[None, :, 0] * b[None, :, 1] - inter)


def anchors_cli(*args):
    return run_script(sys.executable, "-m", "src.data.anchors", *args)


def test_recovers_planted_clusters(tmp_path):
    ann = tmp_path / "train.json"
    sizes = write_planted(ann)
    proc = anchors_cli("--ann_file", str(ann), "--num_anchors", "6", "--size", "320", "--config_path", TINY_CFG)
    flat = re.search(r"--anchor_scales (\S+)", proc.stdout).group(1)
    anchors = np.array([int(v) for v in flat.split(",")], np.float64).reshape(-1, 2)
    assert len(anchors) == 6
    assert (np.diff(anchors.prod(axis=1)) >= 0).all(), "smallest first"
    assert iou_wh(PLANTED, anchors).max(axis=1).min() > 0.9, anchors
    fitted, current = (float(v) for v in re.search(r"mean best IoU: ([\d.]+) with these 6 anchors, ([\d.]+) "
                                                   r"with the current 6", proc.stdout).groups())
    assert fitted > 0.9
    assert fitted == round(float(iou_wh(sizes, anchors).max(axis=1).mean()), 4)
    with open(TINY_CFG) as f:
        tiny = np.array(yaml.safe_load(f)["anchor_scales"], np.float64)
    assert current == round(float(iou_wh(sizes, tiny).max(axis=1).mean()), 4)
    assert f"{len(sizes)} boxes" in proc.stdout
    assert "anchor_mask" not in proc.stdout  # same count as the config: its mask still fits


def test_seeded_and_stretch_and_new_mask(tmp_path):
    root = tmp_path / "data"
    (root / "annotations").mkdir(parents=True)
    write_planted(root / "annotations" / "instances_train2017.json")
    args = ("--data_dir", str(root), "--num_anchors", "4", "--size", "320", "--letterbox", "False", "--seed", "3",
            "--config_path", TINY_CFG)
    first = anchors_cli(*args).stdout
    assert first == anchors_cli(*args).stdout
    assert "anchor_mask: [[2, 3], [0, 1]]" in first
    assert "--anchor_mask '[[2,3],[0,1]]'" in first
    assert "with these 4 anchors" in first and "with the current 6 " in first
    assert "stretched" in first
    from model_utils.config import load_config
    options = next(line for line in first.splitlines() if line.startswith("--anchor_scales"))
    config = load_config(["--config_path", TINY_CFG] + shlex.split(options))
    assert config.anchor_mask == [[2, 3], [0, 1]] and len(config.anchor_scales) == 4
    odd = anchors_cli(*args[:3], "5", *args[4:]).stdout
    assert "set anchor_mask by hand: 5 anchors do not split evenly over 2 scales" in odd
    saved = tmp_path / "mine" / "tiny.yaml"
    anchors_cli(*args, "--save_config", str(saved))
    mine = load_config(["--config_path", str(saved)])  # the model's config with the fitted anchors and mask
    assert (mine.anchor_scales, mine.anchor_mask) == (config.anchor_scales, config.anchor_mask)
    assert mine.model_name == "yolov3_tiny" and mine.source("anchor_scales") == str(saved)
    proc = run_script(sys.executable, "-m", "src.data.anchors", *args, "--save_config", str(tmp_path), check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == f"error: save_config {tmp_path} is a folder; give a file name"


def test_boxes_scaled_as_the_network_input(tmp_path):
    from src.data.anchors import training_box_sizes
    ann = tmp_path / "train.json"
    sizes = write_planted(ann)
    np.testing.assert_allclose(training_box_sizes(str(ann), 320, True), sizes)
    np.testing.assert_allclose(training_box_sizes(str(ann), 320, False), sizes * [1.0, (320 / 480) / 0.5])
    np.testing.assert_allclose(training_box_sizes(str(ann), 640, True), sizes * 2)


def test_errors_are_one_line(tmp_path):
    proc = run_script(sys.executable, "-m", "src.data.anchors", "--data_dir", str(tmp_path), check=False)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0
    assert "annotation file not found" in proc.stderr
    ann = tmp_path / "few.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
                               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9],
                                                "iscrowd": 0}],
                               "categories": [{"id": 1, "name": "a"}]}))
    proc = run_script(sys.executable, "-m", "src.data.anchors", "--ann_file", str(ann), check=False)
    assert proc.returncode != 0 and "1 distinct box sizes are too few for 9 anchors" in proc.stderr

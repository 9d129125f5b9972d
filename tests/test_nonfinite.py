"""Untrained or diverged weights: rows with inf/NaN are dropped and counted, every box written is finite
and inside the image, and drawing copes with any box."""
import json
import math
import os
import re
import warnings

import cv2
import numpy as np
import pytest

from conftest import TINY_CFG, run_script
from src.models.spec import ModelSpec
from src.engine.detector import Detections, clip_to_image
from src.engine.nms import select_detections
from src.engine.visualize import draw_detections

SIZE = 256  # network input: the stride-32 head is 8 x 8
INF_ROWS_PER_IMAGE = 8 * 8  # anchor 0 of the stride-32 head


def strict_json(text: str):
    """json.loads that rejects Infinity, -Infinity and NaN, as most JSON readers do."""
    def reject(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=reject)


def numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def logged_nonfinite(output: str) -> int:
    return int(re.search(r"non-finite rows dropped before NMS: (\d+)", output).group(1))


def assert_boxes_inside(records, sizes):
    """Every number finite; each bbox within its image (clipped as darknet's COCO writer does)."""
    assert all(math.isfinite(v) for v in numbers(records))
    for r, (h, w) in zip(records, sizes):
        x, y, bw, bh = r["bbox"]
        assert 0 <= x and 0 <= y and bw >= 0 and bh >= 0, r
        assert x + bw <= w + 1e-2 and y + bh <= h + 1e-2, (r, w, h)


def write_diverged_checkpoint(path: str) -> None:
    """yolov3-tiny, untrained, with head biases that make anchor 0 of the stride-32 head decode to w = h = inf
    (exp overflows float32), anchor 1 to huge but finite boxes, all three confident of class 0."""
    from model_utils.config import load_config
    from src.formats.checkpoint import network_parameters, save_checkpoint
    from src.models.yolo import build_network
    import mindspore as ms
    config = load_config(["--config_path", TINY_CFG])
    network = build_network(ModelSpec.from_config(config))
    conv = network.head1.conv
    bias = conv.bias.asnumpy().reshape(3, -1)
    bias[0, 2:4] = 1000.0  # exp -> inf
    bias[1, 2:4] = 9.0  # exp(9) * anchor: thousands of pixels, partly outside any image
    bias[:, 4] = 10.0
    bias[:, 5] = 10.0
    conv.bias.set_data(ms.Tensor(bias.reshape(-1)))
    save_checkpoint(network_parameters(network), path)


def write_images(root: str) -> None:
    """Three 200 x 200 synthetic images in COCO layout (val2017 and its annotations)."""
    from src.data.synthetic import make_dataset
    make_dataset(root, 0, 3, size=200)


@pytest.fixture(scope="module")
def diverged_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("diverged") / "diverged.ckpt")
    write_diverged_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shapes"))
    write_images(root)
    return root


def test_predict_image_and_video(diverged_ckpt, images, tmp_path):
    image = os.path.join(images, "val2017", "000000.jpg")
    out = tmp_path / "image"
    proc = run_script("predict.py", "--config_path", TINY_CFG, "--pretrained", diverged_ckpt, "--input", image,
                      "--output_dir", str(out), "--testing_shape", str(SIZE))
    assert logged_nonfinite(proc.stdout) == INF_ROWS_PER_IMAGE
    records = strict_json((out / "detections.json").read_text())
    assert records
    assert_boxes_inside(records, [(200, 200)] * len(records))
    assert any(r["bbox"] == [0, 0, 200, 200] for r in records)  # a huge box, clipped to the whole image
    assert cv2.imread(str(out / "000000.jpg")).shape == (200, 200, 3)

    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (240, 160))
    for name in sorted(os.listdir(os.path.join(images, "val2017"))):
        writer.write(cv2.resize(cv2.imread(os.path.join(images, "val2017", name)), (240, 160)))
    writer.release()
    out = tmp_path / "video"
    proc = run_script("predict.py", "--config_path", TINY_CFG, "--pretrained", diverged_ckpt, "--input", video,
                      "--output_dir", str(out), "--testing_shape", str(SIZE))
    assert logged_nonfinite(proc.stdout) == 3 * INF_ROWS_PER_IMAGE
    assert proc.stdout.count("non-finite rows dropped") == 1
    records = strict_json((out / "detections.json").read_text())
    assert {r["frame"] for r in records} == {0, 1, 2}
    assert_boxes_inside(records, [(160, 240)] * len(records))
    cap = cv2.VideoCapture(str(out / "clip_det.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 3


def test_eval(diverged_ckpt, images, tmp_path):
    out = tmp_path / "eval"
    proc = run_script("eval.py", "--config_path", TINY_CFG, "--data_dir", images, "--pretrained", diverged_ckpt,
                      "--eval_dir", str(out), "--testing_shape", str(SIZE), "--per_batch_size", "2")
    assert logged_nonfinite(proc.stdout) == 3 * INF_ROWS_PER_IMAGE
    assert proc.stdout.count("non-finite rows dropped") == 1
    preds = strict_json((out / "predictions.json").read_text())
    assert len({p["image_id"] for p in preds}) == 3
    assert_boxes_inside(preds, [(200, 200)] * len(preds))
    stats = strict_json((out / "stats.json").read_text())
    assert stats["images"] == 3 and all(math.isfinite(v) for v in numbers(stats))


def test_select_detections_drops_and_counts_nonfinite_rows():
    rows = np.zeros((6, 5 + 2), np.float32)
    rows[:, :4] = [50, 50, 20, 20]
    rows[:, 4:6] = 0.9
    rows[:, 0] += np.arange(6) * 100  # no overlaps
    rows[1, 2] = np.inf
    rows[2, 1] = -np.inf
    rows[3, 5] = np.nan  # a NaN score
    rows[5, 2:4] = 1e20  # finite, but its area overflows float32: no IoU with it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        boxes, scores, labels, dropped = select_detections(rows, 0.005, 0.45, 100)
    assert dropped == 4
    np.testing.assert_array_equal(boxes[:, 0], [50, 450])
    assert np.isfinite(scores).all() and labels.tolist() == [0, 0]


def test_clip_to_image_as_darknet():
    boxes = np.array([[-10, 5, 30, 20],  # left edge cut
                      [90, 90, 50, 50],  # right and bottom cut
                      [-1e30, -1e30, 3e30, 3e30],  # covers everything
                      [300, 10, 20, 20],  # wholly outside: empty, on the border
                      [10, 10, 20, 20]], np.float32)
    np.testing.assert_array_equal(clip_to_image(boxes, (100, 120)),
                                  [[0, 5, 20, 20], [90, 90, 30, 10], [0, 0, 120, 100], [120, 10, 0, 20],
                                   [10, 10, 20, 20]])


def test_drawing_any_box():
    img = np.full((60, 80, 3), 255, np.uint8)
    boxes = np.array([[-30, -30, 50, 50], [70, 50, 100, 100], [-1e30, 10, 3e30, 5], [500, 500, 10, 10],
                      [-500, -500, 10, 10], [np.inf, 0, 1, 1], [0, np.nan, 1, 1], [10, 10, 30, 20]], np.float32)
    det = Detections(boxes, np.full(len(boxes), 0.5, np.float32), np.zeros(len(boxes), np.int64))
    out = draw_detections(img, det, ["person"])
    assert out.shape == img.shape and (out != 255).any()
    assert (img == 255).all()

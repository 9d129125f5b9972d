"""Bad training annotations, training shapes, predict output folders, video writers and hub arguments:
one clear error line and a non-zero exit, the user's files untouched."""
import hashlib
import json
import os

import cv2
import numpy as np
import pytest

from conftest import TINY_CFG, run_script
from test_cli_errors import assert_clean_error


def digest(folder):
    return {p: hashlib.sha256(open(os.path.join(folder, p), "rb").read()).hexdigest()
            for p in sorted(os.listdir(folder)) if os.path.isfile(os.path.join(folder, p))}


@pytest.fixture
def shapes(tmp_path):
    from src.data.synthetic import make_dataset
    make_dataset(str(tmp_path / "data"), 4, 0, size=64, min_size=16, max_size=30)
    return tmp_path / "data"


@pytest.mark.parametrize("damage, message", [
    (lambda a: a.update(category_id=99), "has category_id 99, which is not in 'categories' (1, 2, 3)"),
    (lambda a: a.pop("bbox"), "has no bbox [x, y, w, h] (got None)"),
    (lambda a: a.update(bbox=[1, 2, 3]), "has no bbox [x, y, w, h] (got [1, 2, 3])"),
])
def test_bad_training_annotation(damage, message, shapes, tmp_path):
    ann = shapes / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    target = data["annotations"][2]
    damage(target)
    ann.write_text(json.dumps(data))
    before = digest(ann.parent)
    proc = run_script("train.py", "--config_path", TINY_CFG, "--data_dir", str(shapes), "--training_shape", "64",
                      "--ckpt_path", str(tmp_path / "out"), check=False)
    assert_clean_error(proc, str(ann), f"annotation id {target['id']} ", message)
    assert digest(ann.parent) == before


@pytest.mark.parametrize("shape, message", [("100", "must be a multiple of 32, got 100"), ("-32", "must be >= 0, got -32")])
def test_training_shape_not_a_multiple_of_32(shape, message, shapes, tmp_path):
    proc = run_script("train.py", "--config_path", TINY_CFG, "--data_dir", str(shapes), "--training_shape", shape,
                      "--ckpt_path", str(tmp_path / "out"), check=False)
    assert_clean_error(proc, f"training_shape {message} (command line)")
    assert not (tmp_path / "out").exists()


def test_predict_refuses_to_overwrite_its_input_images(shapes, tmp_path):
    images = shapes / "train2017"
    before = digest(images)
    first = sorted(before)[0]
    (tmp_path / "any.ckpt").write_bytes(b"")  # checked before it is read
    for source, out_dir in [(images, images), (images, str(images) + os.sep + "."),
                            (images / first, images)]:
        proc = run_script("predict.py", "--config_path", TINY_CFG, "--input", str(source), "--pretrained",
                          str(tmp_path / "any.ckpt"), "--output_dir", str(out_dir), check=False)
        assert_clean_error(proc, "would overwrite the input image", "choose another --output_dir")
        assert digest(images) == before


def test_video_writer_that_does_not_open(tmp_path, monkeypatch):
    import predict
    from src.errors import UserError
    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    assert writer.isOpened()
    for i in range(3):
        writer.write(np.full((48, 64, 3), 60 * i, np.uint8))
    writer.release()
    unopened = cv2.VideoWriter()
    monkeypatch.setattr(predict.cv2, "VideoWriter", lambda *args: unopened)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"cannot write video .*clip_det\.mp4: OpenCV's mp4v writer did not open"):
        predict.predict_stream(None, video, "clip.avi", str(out / "clip_det.mp4"), None, 0.3)
    assert os.listdir(out) == []


def test_hub_takes_anchor_pairs():
    import mindspore_hub_conf
    anchors = [[12, 16], [19, 36], [40, 28], [36, 75], [76, 55], [72, 146]]
    model = mindspore_hub_conf.create_network("yolov3_tiny", anchor_scales=anchors, num_classes=3, with_decode=True)
    got = [model.decode.anchors[s].asnumpy().reshape(-1, 2).tolist() for s in range(2)]
    assert got == [anchors[3:], anchors[:3]]  # yolov3_tiny's anchor_mask: [[3, 4, 5], [0, 1, 2]]

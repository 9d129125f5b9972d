"""predict.py: the demo's detections and top classes agree with the darknet reference; videos come out with
every frame."""
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict

import cv2
import numpy as np
import pytest

from conftest import COCO_TINY, DARKNET, REPO, SAMPLES, TINY_CFG, darknet_cfg, opencv_reference, reference, run_script
from src.engine.detector import clip_to_image


def _top(records, key):
    best = {}
    for r in records:
        k = r[key]
        if k not in best or r["score"] > best[k]["score"]:
            best[k] = r
    return best


def test_top_class_agrees_with_reference(tiny_ckpt, ref_python, tmp_path):
    out = tmp_path / "pred"
    run_script("predict.py", "--config_path", TINY_CFG, "--pretrained", tiny_ckpt, "--input",
               os.path.join(COCO_TINY, "val2017"), "--output_dir", str(out), "--score_threshold", "0.1")
    ours = _top(json.loads((out / "detections.json").read_text()), "file")
    assert len([f for f in os.listdir(out) if f.endswith(".jpg")]) == 80
    ref_json = tmp_path / "ref.json"
    reference(ref_python, "coco", "--cfg", os.path.join(DARKNET, "yolov3-tiny.cfg"), "--weights",
              os.path.join(DARKNET, "yolov3-tiny.weights"), "--data", COCO_TINY, "--size", "416", "--letterbox",
              "--json", str(ref_json))
    ann = json.loads(open(os.path.join(COCO_TINY, "annotations", "instances_val2017.json")).read())
    names = {im["id"]: im["file_name"] for im in ann["images"]}
    sizes = {im["file_name"]: (im["height"], im["width"]) for im in ann["images"]}
    theirs = _top(json.loads(ref_json.read_text()), "image_id")
    confident = {names[i]: r for i, r in theirs.items() if r["score"] > 0.5}
    assert len(confident) >= 10
    for name, r in confident.items():
        assert name in ours and ours[name]["category_id"] == r["category_id"], name
        assert abs(ours[name]["score"] - r["score"]) < 1e-3
        ref_box = clip_to_image(np.array([r["bbox"]], np.float32), sizes[name])[0]  # as predict.py clips
        np.testing.assert_allclose(ours[name]["bbox"], ref_box, atol=0.05)


def test_video_every_frame(tiny_ckpt, shared, tmp_path):
    files = sorted(os.listdir(os.path.join(COCO_TINY, "val2017")))[:4]
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (320, 240))
    for f in files + files[:1]:
        writer.write(cv2.resize(cv2.imread(os.path.join(COCO_TINY, "val2017", f)), (320, 240)))
    writer.release()
    out = tmp_path / "out"
    run_script("predict.py", "--config_path", TINY_CFG, "--pretrained", tiny_ckpt, "--input", video,
               "--output_dir", str(out), "--score_threshold", "0.2")
    cap = cv2.VideoCapture(str(out / "clip_det.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 5
    per_frame = defaultdict(list)
    for r in json.loads((out / "detections.json").read_text()):
        per_frame[r["frame"]].append(r)
    assert set(per_frame) <= set(range(5)) and len(per_frame) >= 3
    # frames 0 and 4 show the same image (through a lossy codec): same top class
    top = [max(per_frame[i], key=lambda r: r["score"])["category_name"] for i in (0, 4)]
    assert top[0] == top[1]


@pytest.fixture(scope="module")
def demo(tiny_weights_file, tmp_path_factory):
    """`python predict.py` alone, run in a fresh folder with a cache holding only the weights: its
    output folder and its cache."""
    run_dir = tmp_path_factory.mktemp("demo")
    cache = run_dir / "cache"
    cache.mkdir()
    shutil.copy(tiny_weights_file, cache / "yolov3-tiny.weights")
    env = dict(os.environ, YOLO_CACHE_DIR=str(cache))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "predict.py")], cwd=run_dir, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir / "outputs" / "predict", cache


def test_no_argument_demo_uses_cached_weights(demo):
    """yolov3-tiny (from the cache here; fetched on a fresh machine) on samples/."""
    out, cache = demo
    samples = sorted(f for f in os.listdir(SAMPLES) if f.endswith(".jpg"))
    assert sorted(f for f in os.listdir(out) if f.endswith(".jpg")) == samples
    found = {(r["file"], r["category_name"]) for r in json.loads((out / "detections.json").read_text())
             if r["score"] > 0.5}
    assert {("000000119828.jpg", "laptop"), ("000000261888.jpg", "person")} <= found
    from src.formats.model_card import CARD_VERSION, open_weights
    card = open_weights(str(cache / f"yolov3_tiny.card{CARD_VERSION}.ckpt"))[0]
    assert card.layout == "card" and len(card.values["labels"]) == 80 and card.values["input_centering"] is False


def test_demo_detections_match_darknet_reference(demo, tiny_weights_file, ref_python, tmp_path):
    """Every detection the demo writes is one darknet makes (OpenCV's importer, letterbox, per-class NMS
    by OpenCV) on the same images: same class, score within 1e-3, box within 0.05 px; and the other way
    round. Detections within 0.01 of the 0.3 threshold may fall on either side of it."""
    from model_utils.config import load_config
    config = load_config(["--config_path", TINY_CFG])  # the demo's config
    threshold = config.score_threshold
    ours = [dict(r, cls=config.labels.index(r["category_name"]))
            for r in json.loads((demo[0] / "detections.json").read_text())]
    ref_json = tmp_path / "ref.json"
    opencv_reference(ref_python, "detect", "--cfg", darknet_cfg("yolov3-tiny"), "--weights", tiny_weights_file,
                     "--images", SAMPLES, "--size", str(config.testing_shape), "--score", str(threshold),
                     "--nms", str(config.nms_thresh), "--json", str(ref_json))
    sizes = {f: cv2.imread(os.path.join(SAMPLES, f)).shape[:2] for f in os.listdir(SAMPLES) if f.endswith(".jpg")}
    theirs = [dict(r, cls=r["class"], bbox=clip_to_image(np.array([r["bbox"]], np.float32), sizes[r["file"]])[0])
              for r in json.loads(ref_json.read_text())]  # clipped to the image, as predict.py writes boxes
    assert len([r for r in theirs if r["score"] > threshold + 0.01]) >= 4, theirs

    def matched(r, others):
        return any(o["file"] == r["file"] and o["cls"] == r["cls"] and abs(o["score"] - r["score"]) < 1e-3
                   and np.allclose(o["bbox"], r["bbox"], atol=0.05) for o in others)
    for a, b in ((ours, theirs), (theirs, ours)):
        for r in a:
            if r["score"] > threshold + 0.01:
                assert matched(r, b), r

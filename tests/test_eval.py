"""eval.py: COCO AP parity with the darknet reference, outputs, and skipped images."""
import json
import os
import re
import shutil

import pytest

from conftest import COCO_TINY, DARKNET, TINY_CFG, reference, run_script

STATS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
         "images", "skipped_images", "seconds"}


@pytest.mark.parametrize("split, letterbox", [("val2017", False), ("val2017", True), ("train2017", False)])
def test_ap_matches_darknet_reference(tiny_ckpt, ref_python, tmp_path, split, letterbox):
    """On both COCO subsets of ../shared (the train2017 one through --ann_file/--image_dir)."""
    out = tmp_path / "eval"
    proc = run_script("eval.py", "--config_path", TINY_CFG, "--data_dir", COCO_TINY, "--pretrained", tiny_ckpt,
                      "--ann_file", os.path.join(COCO_TINY, "annotations", f"instances_{split}.json"),
                      "--image_dir", os.path.join(COCO_TINY, split),
                      "--testing_shape", "416", "--eval_dir", str(out), "--letterbox", str(letterbox))
    assert "=============coco eval result=========" in proc.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats) == STATS and stats["images"] == 80 and stats["skipped_images"] == 0
    preds = json.loads((out / "predictions.json").read_text())
    assert preds and {"image_id", "category_id", "bbox", "score"} <= set(preds[0])
    assert min(p["score"] for p in preds) >= 0.005  # scores > 0.005, rounded to 5 places

    args = ["coco", "--cfg", os.path.join(DARKNET, "yolov3-tiny.cfg"), "--weights",
            os.path.join(DARKNET, "yolov3-tiny.weights"), "--data", COCO_TINY, "--split", split, "--size", "416"]
    ref = reference(ref_python, *(args + (["--letterbox"] if letterbox else []))).stdout
    ref_ap = float(re.search(r"reference AP=([0-9.]+)", ref).group(1))
    assert abs(stats["AP"] - ref_ap) <= 0.005, (stats["AP"], ref_ap)
    assert stats["AP"] > 0.1


def test_missing_and_unreadable_images_are_skipped(tiny_ckpt, shared, tmp_path):
    ann = json.loads(open(os.path.join(COCO_TINY, "annotations", "instances_val2017.json")).read())
    images = ann["images"][:3]
    (tmp_path / "val2017").mkdir()
    for im in images:
        shutil.copy(os.path.join(COCO_TINY, "val2017", im["file_name"]), tmp_path / "val2017")
    (tmp_path / "val2017" / "broken.jpg").write_bytes(b"not a jpeg")
    images += [dict(images[0], id=10**9, file_name="broken.jpg"), dict(images[0], id=10**9 + 1, file_name="gone.jpg")]
    keep = {im["id"] for im in images}
    ann.update(images=images, annotations=[a for a in ann["annotations"] if a["image_id"] in keep])
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(ann))
    proc = run_script("eval.py", "--config_path", TINY_CFG, "--data_dir", str(tmp_path), "--pretrained", tiny_ckpt,
                      "--eval_dir", str(tmp_path / "out"), "--per_batch_size", "2")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["images"] == 3 and stats["skipped_images"] == 2
    assert "broken.jpg" in proc.stderr and "gone.jpg" in proc.stderr

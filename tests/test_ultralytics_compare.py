"""tools/ultralytics_compare.py's own part (ultralytics itself never runs in the suite): the COCO set written in
ultralytics' YOLO layout, and detections in that layout scored back against the COCO file."""
import importlib.util
import json
import os

import cv2
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool():
    spec = importlib.util.spec_from_file_location("ultralytics_compare",
                                                  os.path.join(REPO, "tools", "ultralytics_compare.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def coco_set(tmp_path):
    """Two images of different shapes, categories numbered 9 and 0 listed in that order, image ids not from 1
    (annotation ids from 1: pycocotools takes id 0 for "unmatched")."""
    cats = [{"id": 9, "name": "square"}, {"id": 0, "name": "circle"}]
    images = [{"id": 40, "file_name": "a.jpg", "width": 200, "height": 100},
              {"id": 7, "file_name": "b.png", "width": 64, "height": 128}]
    boxes = {40: [(0, [10, 20, 50, 40]), (9, [100, 0, 100, 100])], 7: [(9, [0, 64, 32, 64])]}
    for split in ("train", "val"):
        os.makedirs(tmp_path / f"{split}2017")
        for img in images:
            cv2.imwrite(str(tmp_path / f"{split}2017" / img["file_name"]), np.zeros((img["height"], img["width"], 3),
                                                                                   np.uint8))
        anns = [{"id": k, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                for k, (i, c, b) in enumerate(((i, c, b) for i in boxes for c, b in boxes[i]), 1)]
        os.makedirs(tmp_path / "annotations", exist_ok=True)
        (tmp_path / "annotations" / f"instances_{split}2017.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return tmp_path, boxes


def test_yolo_layout_and_scoring_round_trip(coco_set, tmp_path_factory):
    tool = load_tool()
    data_dir, boxes = coco_set
    out = tmp_path_factory.mktemp("compare")
    names = tool.write_yolo_layout(str(data_dir), str(out / "yolo_data"))
    assert names == ["circle", "square"]  # labels in category id order: 0 -> 0, 9 -> 1
    layout = out / "yolo_data"
    assert os.path.realpath(layout / "images" / "val" / "7.png") == os.path.realpath(data_dir / "val2017" / "b.png")
    lines = (layout / "labels" / "val" / "40.txt").read_text().splitlines()
    rows = [[float(v) for v in line.split()] for line in lines]
    np.testing.assert_allclose(rows, [[0, 35 / 200, 40 / 100, 50 / 200, 40 / 100], [1, 150 / 200, 0.5, 0.5, 1.0]],
                               atol=1e-6)
    assert "names:\n  0: \"circle\"\n  1: \"square\"\n" in (layout / "data.yaml").read_text()

    class Args:
        pass

    args = Args()
    args.data_dir = str(data_dir)
    label = {0: 0, 9: 1}
    exact = [{"image": str(i), "label": label[c], "score": 0.9, "bbox": b} for i in boxes for c, b in boxes[i]]
    stats = tool.score_ultralytics(args, {"detections": exact, "train_seconds": 1.0})
    assert stats["AP"] == pytest.approx(1.0) and stats["AP75"] == pytest.approx(1.0)
    swapped = [dict(d, label=1 - d["label"]) for d in exact]  # the classes the other way round: nothing right
    assert tool.score_ultralytics(args, {"detections": swapped, "train_seconds": 1.0})["AP50"] == 0.0

"""eval.py: COCO AP parity with the darknet reference, outputs, skipped images, category mapping and the
per-class table."""
import json
import os
import re
import shutil

import pytest

from conftest import COCO_TINY, DARKNET, TINY_CFG, reference, run_script

STATS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
         "images", "skipped_images", "seconds", "per_class"}


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


SUBSET = (62, 18, 3, 1)  # chair, dog, car, person: listed in reverse order of id


def subset_annotations(path, cat_ids):
    """coco_tiny val2017 with only `cat_ids`' categories and annotations, categories in the given order."""
    ann = json.loads(open(os.path.join(COCO_TINY, "annotations", "instances_val2017.json")).read())
    cats = {c["id"]: c for c in ann["categories"]}
    ann.update(categories=[cats[c] for c in cat_ids],
               annotations=[a for a in ann["annotations"] if a["category_id"] in cat_ids])
    path.write_text(json.dumps(ann))
    return str(path)


def test_subset_of_categories_scores_as_the_reference_and_per_class_table(tiny_ckpt, ref_python, tmp_path):
    """A COCO model on a file of four COCO categories: labels go to the file's categories by the model's
    ids (converted darknet weights: COCO's), whatever the file's order; per-class APs average to AP."""
    from src.data.coco import evaluate, load_coco
    ann_file = subset_annotations(tmp_path / "subset.json", SUBSET)
    out = tmp_path / "eval"
    proc = run_script("eval.py", "--config_path", TINY_CFG, "--pretrained", tiny_ckpt, "--ann_file", ann_file,
                      "--image_dir", os.path.join(COCO_TINY, "val2017"), "--testing_shape", "416",
                      "--eval_dir", str(out))
    stats = json.loads((out / "stats.json").read_text())
    preds = json.loads((out / "predictions.json").read_text())
    assert {p["category_id"] for p in preds} == set(SUBSET)

    ref_json = tmp_path / "ref.json"
    reference(ref_python, "coco", "--cfg", os.path.join(DARKNET, "yolov3-tiny.cfg"), "--weights",
              os.path.join(DARKNET, "yolov3-tiny.weights"), "--data", COCO_TINY, "--split", "val2017",
              "--size", "416", "--letterbox", "--json", str(ref_json))
    ref = [d for d in json.loads(ref_json.read_text()) if d["category_id"] in SUBSET]
    ref_stats = evaluate(load_coco(ann_file), ref)[0]
    assert abs(stats["AP"] - ref_stats["AP"]) <= 0.005, (stats["AP"], ref_stats["AP"])
    assert abs(stats["AP50"] - ref_stats["AP50"]) <= 0.005, (stats["AP50"], ref_stats["AP50"])
    assert stats["AP"] > 0.05

    rows = stats["per_class"]
    assert [r["category_id"] for r in rows] == sorted(SUBSET)
    assert [r["name"] for r in rows] == ["person", "car", "dog", "chair"]
    counts = {c: sum(a["category_id"] == c for a in json.loads(open(ann_file).read())["annotations"]
                     if not a.get("iscrowd", 0)) for c in SUBSET}
    assert {r["category_id"]: r["instances"] for r in rows} == counts
    scored = [r for r in rows if r["AP"] is not None]
    assert len(scored) == sum(1 for n in counts.values() if n)
    assert sum(r["AP"] for r in scored) / len(scored) == pytest.approx(stats["AP"], abs=1e-9)
    assert sum(r["AP50"] for r in scored) / len(scored) == pytest.approx(stats["AP50"], abs=1e-9)
    table = proc.stdout[proc.stdout.index("per-class AP"):]
    mean_line = next(line for line in table.splitlines() if line.split()[:1] == ["mean"])
    assert float(mean_line.split()[1]) == pytest.approx(stats["AP"], abs=6e-4)
    for r in rows:
        assert re.search(rf"\b{r['category_id']}\s+{r['name']}\s+{r['instances']}\s", table)


def test_category_the_model_cannot_map_is_an_error(tiny_ckpt, tmp_path):
    from test_cli_errors import assert_clean_error
    ann = json.loads(open(os.path.join(COCO_TINY, "annotations", "instances_val2017.json")).read())
    ann["categories"].append({"id": 999, "name": "unicorn"})
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    proc = run_script("eval.py", "--config_path", TINY_CFG, "--pretrained", tiny_ckpt, "--ann_file",
                      str(tmp_path / "ann.json"), "--image_dir", os.path.join(COCO_TINY, "val2017"),
                      "--eval_dir", str(tmp_path / "out"), check=False)
    assert_clean_error(proc, "category 999 'unicorn'", "is not one of the model's categories")
    assert not (tmp_path / "out" / "stats.json").exists()


def test_labels_map_by_name_then_by_id(tmp_path):
    from src.data.coco import label_to_category, load_coco
    from src.errors import UserError
    (tmp_path / "a.json").write_text(json.dumps({"images": [], "annotations": [], "categories": [
        {"id": 40, "name": "Triangle"}, {"id": 7, "name": "circle"}, {"id": 12, "name": "square"}]}))
    coco = load_coco(str(tmp_path / "a.json"))
    assert label_to_category(coco, "a.json", [7, 12, 40], ["c", "s", "t"]) == {0: 7, 1: 12, 2: 40}
    assert label_to_category(coco, "a.json", None, ["square", "triangle", "circle", "star"]) == {0: 12, 1: 40, 2: 7}
    assert label_to_category(coco, "a.json", [1, 2, 3], ["triangle", "square", "circle"]) == {0: 40, 1: 12, 2: 7}
    with pytest.raises(UserError, match="category 12 'square' of a.json is not one of the model's categories"):
        label_to_category(coco, "a.json", [7, 40], ["circle", "triangle"])

"""A file's categories meet the model's labels by name first (src.data.coco.label_to_category), in eval.py, eval
during training and postprocess.py: coco_tiny val2017 renumbered as other tools number it scores exactly as
with COCO's ids, and the ids that point at another class are logged once."""
import json
import os
import re
import sys

import numpy as np
import pytest

from conftest import COCO_TINY, TINY_CFG, run_script

VAL_ANN = os.path.join(COCO_TINY, "annotations", "instances_val2017.json")
VAL_DIR = os.path.join(COCO_TINY, "val2017")
STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
OVERRULED = "categories matched by name where their id is another of the model's classes"


def renumbered(path, order):
    """coco_tiny val2017 with category ids 1..80 given to COCO's categories in `order` (of their COCO ids), the
    categories listed in that order: as a converter writing the names of a data YAML numbers them."""
    ann = json.loads(open(VAL_ANN).read())
    cats = {c["id"]: c for c in ann["categories"]}
    new_id = {old: k + 1 for k, old in enumerate(order)}
    ann["categories"] = [dict(cats[old], id=new_id[old]) for old in order]
    ann["annotations"] = [dict(a, category_id=new_id[a["category_id"]]) for a in ann["annotations"]]
    path.write_text(json.dumps(ann))
    return str(path)


def coco_order():
    return sorted(c["id"] for c in json.loads(open(VAL_ANN).read())["categories"])


def shuffled_order():
    return [int(c) for c in np.random.default_rng(31).permutation(coco_order())]


def run_eval(ckpt, ann_file, out):
    proc = run_script("eval.py", "--config_path", TINY_CFG, "--pretrained", ckpt, "--ann_file", ann_file,
                      "--image_dir", VAL_DIR, "--testing_shape", "416", "--eval_dir", str(out))
    return proc, json.loads((out / "stats.json").read_text()), json.loads((out / "predictions.json").read_text())


def names_of(ann_file):
    return {c["id"]: c["name"] for c in json.loads(open(ann_file).read())["categories"]}


@pytest.fixture(scope="module")
def coco_ids_eval(tiny_ckpt, tmp_path_factory):
    """eval.py on coco_tiny val2017 as it is (COCO's ids): (stdout, stats, predictions)."""
    return run_eval(tiny_ckpt, VAL_ANN, tmp_path_factory.mktemp("coco_ids"))


def assert_same_scores(stats, reference):
    """Every stat of the same boxes (to float rounding: the mean runs over the categories in another order),
    and each class's AP and AP50, by name, exactly."""
    for k in STAT_KEYS:
        assert stats[k] == pytest.approx(reference[k], abs=1e-12), k
    by_name = {r["name"]: r for r in reference["per_class"]}
    for r in stats["per_class"]:
        ref = by_name[r["name"]]
        assert (r["instances"], r["AP"], r["AP50"]) == (ref["instances"], ref["AP"], ref["AP50"]), r["name"]


@pytest.mark.parametrize("order", ["contiguous", "shuffled"])
def test_eval_renumbered_file_scores_as_coco_ids(tiny_ckpt, coco_ids_eval, tmp_path, order):
    """ids 1..80 in COCO's name order (ultralytics' coco8.yaml converted), and the same names numbered in a
    shuffled order: the same AP, each box under its own name, and the overruled ids logged once."""
    ann_file = renumbered(tmp_path / "ann.json", coco_order() if order == "contiguous" else shuffled_order())
    proc, stats, preds = run_eval(tiny_ckpt, ann_file, tmp_path / "eval")
    ref_proc, ref_stats, ref_preds = coco_ids_eval
    assert ref_stats["AP"] > 0.1 and OVERRULED not in ref_proc.stdout
    assert_same_scores(stats, ref_stats)
    names, ref_names = names_of(ann_file), names_of(VAL_ANN)
    assert sorted((p["image_id"], names[p["category_id"]], p["bbox"], p["score"]) for p in preds) == \
        sorted((p["image_id"], ref_names[p["category_id"]], p["bbox"], p["score"]) for p in ref_preds)
    logged = [line for line in proc.stdout.splitlines() if OVERRULED in line]
    assert len(logged) == 1, proc.stdout[-3000:]
    if order == "contiguous":  # ids 1..11 are COCO's; 12 is not a COCO id; 13 is COCO's stop sign
        assert "13 'parking meter' (id 13 is the model's 'stop sign')" in logged[0]
        assert "12 'stop sign'" not in logged[0] and "11 'fire hydrant'" not in logged[0]
    table = proc.stdout[proc.stdout.index("per-class AP"):]
    for r in stats["per_class"]:
        ap = next(x["AP"] for x in ref_stats["per_class"] if x["name"] == r["name"])
        cell = "     -" if ap is None else f"{ap:6.3f}"
        assert re.search(rf"\b{r['category_id']}\s+{re.escape(r['name'])}\s+{r['instances']}\s+{re.escape(cell)}",
                         table), r


def test_postprocess_renumbered_file_scores_as_coco_ids(coco_ids_eval, tmp_path):
    """The C++ app's result files (written here from eval.py's detections: label = COCO label) scored
    against COCO's ids and against the shuffled file: the same stats."""
    from model_utils.config import load_config
    config = load_config(["--config_path", TINY_CFG])
    label_of = {int(c): k for k, c in enumerate(config.coco_ids)}
    files = {im["id"]: im["file_name"] for im in json.loads(open(VAL_ANN).read())["images"]}
    lines = {name: [] for name in files.values()}
    for p in coco_ids_eval[2]:
        lines[files[p["image_id"]]].append(f"{label_of[p['category_id']]} {p['score']} "
                                           + " ".join(str(v) for v in p["bbox"]))
    (tmp_path / "results").mkdir()
    for name, rows in lines.items():
        (tmp_path / "results" / f"{name}.txt").write_text("".join(r + "\n" for r in rows))
    shuffled = renumbered(tmp_path / "shuffled.json", shuffled_order())
    stats = {}
    for key, ann_file in (("coco", VAL_ANN), ("shuffled", shuffled)):
        proc = run_script("postprocess.py", "--result_files", str(tmp_path / "results"), "--ann_file", ann_file,
                          "--output_dir", str(tmp_path / key), "--config_path", TINY_CFG)
        stats[key] = json.loads((tmp_path / key / "stats.json").read_text())
        assert (OVERRULED in proc.stdout) == (key == "shuffled")
    for k in STAT_KEYS:
        assert stats["shuffled"][k] == pytest.approx(stats["coco"][k], abs=1e-12), k
    assert stats["coco"]["AP"] == pytest.approx(coco_ids_eval[1]["AP"], abs=1e-3)


def train_subset(data, order=None):
    """A data set of 8 coco_tiny training images (all 80 categories listed), ids renumbered in `order` if given."""
    ann = json.loads(open(os.path.join(COCO_TINY, "annotations", "instances_train2017.json")).read())
    ann["images"] = ann["images"][:8]
    keep = {im["id"] for im in ann["images"]}
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] in keep]
    if order is not None:
        cats = {c["id"]: c for c in ann["categories"]}
        new_id = {old: k + 1 for k, old in enumerate(order)}
        ann["categories"] = [dict(cats[old], id=new_id[old]) for old in order]
        ann["annotations"] = [dict(a, category_id=new_id[a["category_id"]]) for a in ann["annotations"]]
    (data / "annotations").mkdir(parents=True)
    (data / "annotations" / "instances_train2017.json").write_text(json.dumps(ann))
    os.symlink(os.path.join(COCO_TINY, "train2017"), data / "train2017")
    return str(data)


def test_finetuning_keeps_the_model_class_order(tiny_ckpt, tmp_path):
    """Fine-tuning the COCO model on a file of the same 80 names numbered in a shuffled order: the labels keep
    COCO's order (the heads keep their classes), with the file's ids; one step later the val AP is still the
    COCO model's, on the shuffled val file."""
    import mindspore as ms
    from model_utils.config import load_config
    order = shuffled_order()
    data = train_subset(tmp_path / "data", order)
    shuffled = renumbered(tmp_path / "shuffled.json", order)
    out = tmp_path / "run"
    proc = run_script("train.py", "--config_path", TINY_CFG, "--data_dir", data, "--resume_yolo", tiny_ckpt,
                      "--training_shape", "416", "--per_batch_size", "8", "--max_epoch", "1", "--lr", "0.00001",
                      "--warmup_epochs", "0", "--ckpt_path", str(out), "--run_eval", "True", "--val_ann_file",
                      shuffled, "--val_image_dir", VAL_DIR, "--testing_shape", "416")
    assert f"fine-tuning: the 80 classes keep the label order of {tiny_ckpt}" in proc.stdout
    from src.formats.model_card import open_weights
    card = open_weights(str(out / "ckpt_0" / "0-1_1.ckpt"))[0].values
    coco_ids = [int(i) for i in load_config(["--config_path", TINY_CFG]).coco_ids]
    new_id = {old: k + 1 for k, old in enumerate(order)}
    coco_names = names_of(VAL_ANN)
    assert card["coco_ids"] == [new_id[c] for c in coco_ids]
    assert card["labels"] == [coco_names[c] for c in coco_ids]
    ap = float(re.search(r"epoch\[0\], val AP:([0-9.]+)", proc.stdout).group(1))
    assert ap > 0.12, proc.stdout[-3000:]


def test_eval_during_training_matches_by_name(tiny_ckpt, tmp_path):
    """Fine-tune 2 one-step epochs with eval on the shuffled file after each: the overruled ids are logged once,
    and best.ckpt's AP is what eval.py gives on COCO's own file."""
    import mindspore as ms
    data = train_subset(tmp_path / "data")
    shuffled = renumbered(tmp_path / "shuffled.json", shuffled_order())
    out = tmp_path / "run"
    proc = run_script("train.py", "--config_path", TINY_CFG, "--data_dir", data, "--resume_yolo", tiny_ckpt,
                      "--training_shape", "160", "--per_batch_size", "8", "--max_epoch", "2", "--lr", "0.0005",
                      "--warmup_epochs", "0", "--ckpt_path", str(out), "--run_eval", "True", "--eval_interval", "1",
                      "--eval_start_epoch", "1", "--val_ann_file", shuffled, "--val_image_dir", VAL_DIR,
                      "--testing_shape", "416")
    evals = re.findall(r"epoch\[(\d+)\], val AP:([0-9.]+)", proc.stdout)
    assert len(evals) == 2, proc.stdout[-3000:]
    assert proc.stdout.count(OVERRULED) == 1
    best = ms.load_checkpoint(str(out / "ckpt_0" / "best.ckpt"))
    _, stats, _ = run_eval(str(out / "ckpt_0" / "best.ckpt"), VAL_ANN, tmp_path / "eval")
    assert stats["AP"] > 0.03
    assert best["AP"].asnumpy() == np.float32(stats["AP"])  # the checkpoint holds it as float32


def test_label_to_category_rules(tmp_path):
    """Name first (darknet's VOC-style names are COCO's), id where the name is unknown, a placeholder parent
    left out, and two categories on one label an error."""
    from model_utils.config import load_config
    from src.data.coco import label_to_category, load_coco
    from src.errors import UserError
    config = load_config(["--config_path", TINY_CFG])
    ids, names = [int(i) for i in config.coco_ids], list(config.labels)

    def mapping(categories, model_ids=ids, model_names=names):
        (tmp_path / "a.json").write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
        return label_to_category(load_coco(str(tmp_path / "a.json")), "a.json", model_ids, model_names)

    assert mapping([{"id": 0, "name": "my-set", "supercategory": "none"},
                    {"id": 1, "name": "Motorcycle", "supercategory": "my-set"},
                    {"id": 2, "name": "TV", "supercategory": "my-set"},
                    {"id": 3, "name": "potted plant", "supercategory": "my-set"}]) == \
        {names.index("motorbike"): 1, names.index("tvmonitor"): 2, names.index("pottedplant"): 3}
    # an unknown name goes by its id (18: COCO's dog); a known one by its name, whatever its id (5: aeroplane)
    assert mapping([{"id": 18, "name": "thing"}, {"id": 5, "name": "cat"}]) == {ids.index(18): 18,
                                                                                 names.index("cat"): 5}
    with pytest.raises(UserError, match="categories 1 and 2 of a.json both map to the model's label 0"):
        mapping([{"id": 1, "name": "thing"}, {"id": 2, "name": "person"}])
    with pytest.raises(UserError, match="category 7 'sign' of a.json is not one of the model's categories"):
        mapping([{"id": 7, "name": "sign"}], None, ["circle", "square"])


def test_placeholder_is_a_parent_without_boxes(tmp_path):
    """Left out: a category without boxes named as another's supercategory. Kept: one that is only its own
    supercategory (COCO's 'person'), a parent with boxes, a category without boxes that groups nothing."""
    from src.data.coco import category_ids, load_coco
    categories = [{"id": 0, "name": "my-set", "supercategory": "none"},
                  {"id": 1, "name": "person", "supercategory": "person"},
                  {"id": 2, "name": "vehicle", "supercategory": "my-set"},
                  {"id": 3, "name": "car", "supercategory": "vehicle"},
                  {"id": 4, "name": "unused", "supercategory": "my-set"}]
    annotations = [{"id": k + 1, "image_id": 1, "category_id": c, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0}
                   for k, c in enumerate((2, 3))]
    (tmp_path / "a.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9}],
                                                 "annotations": annotations, "categories": categories}))
    assert category_ids(load_coco(str(tmp_path / "a.json"))) == [1, 2, 3, 4]


def test_ultralytics_layout_of_coco_scores_as_coco(tiny_ckpt, tmp_path):
    """The issue's path: coco_tiny val2017 as an ultralytics set (YOLO txt labels, the names only in the data
    YAML's {index: name} map, as coco8.yaml has them), converted with --data and evaluated with the COCO model:
    the AP of COCO's own file (crowd boxes, which YOLO labels cannot hold, left out of both)."""
    import cv2
    ann = json.loads(open(VAL_ANN).read())
    ann["annotations"] = [a for a in ann["annotations"] if not a["iscrowd"]]
    (tmp_path / "no_crowd.json").write_text(json.dumps(ann))
    index = {c: k for k, c in enumerate(coco_order())}
    root = tmp_path / "coco8like"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for im in ann["images"]:
        for split in ("train", "val"):
            os.symlink(os.path.join(VAL_DIR, im["file_name"]), root / "images" / split / im["file_name"])
        h, w = cv2.imread(os.path.join(VAL_DIR, im["file_name"])).shape[:2]
        lines = [f"{index[a['category_id']]} {(a['bbox'][0] + a['bbox'][2] / 2) / w:.6f} "
                 f"{(a['bbox'][1] + a['bbox'][3] / 2) / h:.6f} {a['bbox'][2] / w:.6f} {a['bbox'][3] / h:.6f}"
                 for a in ann["annotations"] if a["image_id"] == im["id"]]
        for split in ("train", "val"):
            (root / "labels" / split / (os.path.splitext(im["file_name"])[0] + ".txt")).write_text(
                "".join(line + "\n" for line in lines))
    names = names_of(VAL_ANN)
    (root / "coco8like.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n" + "".join(
        f"  {k}: {names[c]}\n" for k, c in enumerate(coco_order())))
    run_script(sys.executable, "-m", "src.data.convert_labels", "--data", str(root / "coco8like.yaml"),
               "--output_dir", str(tmp_path / "data"))
    converted = str(tmp_path / "data" / "annotations" / "instances_val2017.json")
    proc, stats, _ = run_eval(tiny_ckpt, converted, tmp_path / "eval")
    _, reference, _ = run_eval(tiny_ckpt, str(tmp_path / "no_crowd.json"), tmp_path / "reference")
    assert OVERRULED in proc.stdout and reference["AP"] > 0.1
    assert stats["AP"] == pytest.approx(reference["AP"], abs=2e-3)
    assert stats["AP50"] == pytest.approx(reference["AP50"], abs=2e-3)
    assert [r["name"] for r in stats["per_class"]] == [names[c] for c in coco_order()]

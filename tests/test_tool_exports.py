"""COCO files as labelling tools export them: Roboflow's (a placeholder category 0 named after the data set,
the parent of the real ones, with no boxes) and CVAT's / Label Studio's (ids from 0, with gaps, listed in their
own order): train.py trains the real classes, eval.py scores them, predict.py names them."""
import json
import os

import pytest

from conftest import TINY_CFG, run_script, shapes_set
from src.formats.model_card import open_weights
from test_train import train_args

NAMES = ["circle", "square", "triangle"]  # src.data.synthetic's, ids 1, 2, 3
EXPORTS = {
    # the placeholder first, the real categories its children, as Roboflow writes them
    "roboflow": ([{"id": 0, "name": "shapes-2fq1x", "supercategory": "none"}]
                 + [{"id": k + 1, "name": n, "supercategory": "shapes-2fq1x"} for k, n in enumerate(NAMES)],
                 {1: 1, 2: 2, 3: 3}),
    # category ids from 0 with a gap, in another order than the names', and image ids from 0
    "zero_based": ([{"id": 9, "name": "triangle"}, {"id": 0, "name": "circle"}, {"id": 4, "name": "square"}],
                   {1: 0, 2: 4, 3: 9}),
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return shapes_set(tmp_path_factory, 16, 6, 128, 24, 50)


def export_like(src: str, dst, tool: str) -> str:
    """The shapes set with the categories as `tool` writes them (images linked)."""
    categories, new_id = EXPORTS[tool]
    (dst / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        os.symlink(os.path.join(src, split), dst / split)
        ann = json.loads(open(os.path.join(src, "annotations", f"instances_{split}.json")).read())
        ann["categories"] = categories
        ann["annotations"] = [dict(a, category_id=new_id[a["category_id"]]) for a in ann["annotations"]]
        if tool == "zero_based":  # Label Studio numbers its images from 0 too
            first = min(im["id"] for im in ann["images"])
            ann["images"] = [dict(im, id=im["id"] - first) for im in ann["images"]]
            ann["annotations"] = [dict(a, image_id=a["image_id"] - first) for a in ann["annotations"]]
        (dst / "annotations" / f"instances_{split}.json").write_text(json.dumps(ann))
    return str(dst)


@pytest.mark.parametrize("tool", sorted(EXPORTS))
def test_trained_evaluated_and_predicted_with_the_real_classes(shapes, tmp_path, tool):
    data = export_like(shapes, tmp_path / "data", tool)
    real_ids = sorted(EXPORTS[tool][1].values())
    name_of = {c["id"]: c["name"] for c in EXPORTS[tool][0]}
    out = str(tmp_path / "run")
    proc = run_script("train.py", *train_args(data, out, "--max_epoch", "1"))
    placeholder = "left out category 0 'shapes-2fq1x': no boxes, the parent of the others"
    assert (placeholder in proc.stdout) == (tool == "roboflow"), proc.stdout[-2000:]
    ckpt_path = os.path.join(out, "ckpt_0", "0-1_4.ckpt")
    card = open_weights(ckpt_path)[0].values
    assert card["num_classes"] == 3
    assert card["labels"] == [name_of[i] for i in real_ids] and card["coco_ids"] == real_ids

    run_script("eval.py", "--config_path", TINY_CFG, "--data_dir", data, "--pretrained", ckpt_path,
               "--testing_shape", "128", "--eval_dir", str(tmp_path / "eval"))
    stats = json.loads((tmp_path / "eval" / "stats.json").read_text())
    assert stats["images"] == 6
    assert [(r["category_id"], r["name"]) for r in stats["per_class"]] == [(i, name_of[i]) for i in real_ids]
    preds = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    assert preds and {p["category_id"] for p in preds} <= set(real_ids)

    run_script("predict.py", "--config_path", TINY_CFG, "--pretrained", ckpt_path, "--input",
               os.path.join(data, "val2017"), "--output_dir", str(tmp_path / "predict"), "--score_threshold", "0")
    records = json.loads((tmp_path / "predict" / "detections.json").read_text())
    assert records and {(r["category_id"], r["category_name"]) for r in records} <= set(name_of.items()) - {
        (0, "shapes-2fq1x")}

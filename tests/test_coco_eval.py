"""src.data.coco.evaluate (faster-coco-eval) against pycocotools' COCOeval, the original, on the converted darknet
yolov3-tiny's detections on coco_tiny val2017: the same stats, precision, recall and per-class table."""
import contextlib
import io
import json
import os

import numpy as np
import pytest

from conftest import COCO_TINY, TINY_CFG, run_script

VAL_ANN = os.path.join(COCO_TINY, "annotations", "instances_val2017.json")


@pytest.fixture(scope="module")
def detections(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    run_script("eval.py", "--config_path", TINY_CFG, "--pretrained", tiny_ckpt, "--ann_file", VAL_ANN, "--image_dir",
               os.path.join(COCO_TINY, "val2017"), "--testing_shape", "416", "--eval_dir", str(out))
    return json.loads((out / "predictions.json").read_text())


def pycocotools_eval(results):
    from pycocotools.cocoeval import COCOeval
    from src.data.coco import load_coco
    coco = load_coco(VAL_ANN)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return coco, evaluator


def test_scores_as_pycocotools(detections):
    """pycocotools divides tp / (tp + fp + eps): one true positive alone gives 1 - 2**-52 where faster-coco-eval
    gives 1.0. That one-ulp difference is the only one in the precision array; recall and scores are equal, every
    stat is within 1e-15 and the per-class table is the same text."""
    from src.data.coco import STAT_KEYS, evaluate, load_coco, per_class_stats, per_class_table
    coco = load_coco(VAL_ANN)
    stats, summary, fast = evaluate(coco, json.loads(json.dumps(detections)))
    ref_coco, ref = pycocotools_eval(json.loads(json.dumps(detections)))
    assert stats["AP"] > 0.1
    for k, v in zip(STAT_KEYS, ref.stats):
        assert stats[k] == pytest.approx(float(v), abs=1e-15), k
    np.testing.assert_array_equal(fast.eval["recall"], ref.eval["recall"])
    np.testing.assert_array_equal(fast.eval["scores"], ref.eval["scores"])
    precision, ref_precision = np.asarray(fast.eval["precision"]), np.asarray(ref.eval["precision"])
    differ = precision != ref_precision
    assert (ref_precision[differ] == 1 - 2.0 ** -52).all() and (precision[differ] == 1.0).all()
    assert differ.mean() < 0.2
    assert per_class_table(per_class_stats(coco, fast)) == per_class_table(per_class_stats(ref_coco, ref))
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        ref.summarize()
    assert summary == "\n".join(line for line in printed.getvalue().splitlines() if line.startswith(" Average"))


def test_evaluate_leaves_out_placeholder_categories(detections, tmp_path):
    """A Roboflow-style parent category (no boxes, the supercategory of the others) is not scored: the same stats,
    and no row for it."""
    from src.data.coco import evaluate, load_coco
    ann = json.loads(open(VAL_ANN).read())
    ann["categories"] = [{"id": 0, "name": "coco-tiny", "supercategory": "none"}] + \
        [dict(c, supercategory="coco-tiny") for c in ann["categories"]]
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    stats, _, evaluator = evaluate(load_coco(str(tmp_path / "ann.json")), json.loads(json.dumps(detections)))
    ref = evaluate(load_coco(VAL_ANN), json.loads(json.dumps(detections)))[0]
    assert stats == ref and 0 not in evaluator.params.catIds and len(evaluator.params.catIds) == 80

"""The model card (src/formats/model_card.py): one precedence rule for every field, older checkpoints with one
warning, and every weights file read once per run (train from --resume_yolo, resume, eval, export)."""
import json
import logging
import os
import subprocess
import sys

import pytest

from conftest import COCO_TINY, REPO, TINY_CFG, shapes_set, tiny_train_args

# Runs a script as `python SCRIPT ARGS` does, counting the opens of the files named in WATCHED (Python's audit
# hook sees every open() and io.open_code(), MindSpore's checkpoint reader and onnx's included); prints
# "OPENS {path: count}" at exit.
COUNTING_RUNNER = """
import atexit, json, os, runpy, sys
watched = {os.path.realpath(p): 0 for p in os.environ["WATCHED"].split(os.pathsep)}
names = {os.path.basename(p) for p in watched}
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        path = os.fsdecode(args[0])
        if os.path.basename(path) in names and os.path.realpath(path) in watched:
            watched[os.path.realpath(path)] += 1
sys.addaudithook(hook)
atexit.register(lambda: print("OPENS " + json.dumps(watched), flush=True))
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def counted_run(script: str, watched, *args: str) -> dict:
    """Run REPO/script with args; how many times it opened each watched file."""
    proc = subprocess.run([sys.executable, "-c", COUNTING_RUNNER, os.path.join(REPO, script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, WATCHED=os.pathsep.join(watched)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("OPENS ")][-1]
    return {path: json.loads(line[len("OPENS "):])[os.path.realpath(path)] for path in watched}


def test_each_weights_file_is_read_once(tiny_ckpt, tmp_path_factory, tmp_path):
    """train.py from --resume_yolo, train.py --resume True, eval.py and export.py each open every weights
    file they use once."""
    data = shapes_set(tmp_path_factory, 8, 2, 96, 20, 40)
    out = str(tmp_path / "run")
    train = tiny_train_args(data, out, 96, 8, 1, 1, "--resume_yolo", tiny_ckpt)
    assert counted_run("train.py", [tiny_ckpt], *train, "--max_epoch", "1") == {tiny_ckpt: 1}
    first = os.path.join(out, "ckpt_0", "0-1_1.ckpt")
    opened = counted_run("train.py", [tiny_ckpt, first], *train, "--max_epoch", "2", "--resume", "True")
    assert opened == {tiny_ckpt: 1, first: 1}
    last = os.path.join(out, "ckpt_0", "0-2_2.ckpt")
    assert counted_run("eval.py", [last], "--data_dir", data, "--pretrained", last, "--eval_dir",
                       str(tmp_path / "eval")) == {last: 1}
    assert counted_run("export.py", [last], "--ckpt_file", last, "--file_name", str(tmp_path / "m"),
                       "--file_format", "ONNX") == {last: 1}
    assert counted_run("eval.py", [str(tmp_path / "m.onnx")], "--data_dir", data, "--onnx_file",
                       str(tmp_path / "m.onnx"), "--eval_dir", str(tmp_path / "eval_onnx")) == {
        str(tmp_path / "m.onnx"): 1}


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def log():
    logger = logging.getLogger("test_model_card")
    handler = Records()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, handler.records
    logger.removeHandler(handler)


def test_precedence_is_the_same_for_every_field(tmp_path, log):
    """command line > the user's config file > the weights' card > the model's defaults (default_config.yaml and
    the package's configs/); logged in one line; with `strict` (an export) a value the user gives that
    contradicts the card is one error naming both."""
    from model_utils.config import load_config
    from src.errors import UserError
    from src.formats.model_card import StoredCard, resolve
    logger, records = log
    mine = tmp_path / "mine.yaml"  # the user's own file, building on the package's tiny config
    mine.write_text(f"_base_: {TINY_CFG}\nletterbox: False\nlabels: [cat, dog, fox]\n")
    config = load_config(["--config_path", str(mine), "--testing_shape", "320"])
    card = {"num_classes": 3, "labels": ["a", "b", "c"], "coco_ids": [7, 8, 9], "testing_shape": 416,
            "letterbox": True, "anchor_scales": [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]],
            "input_centering": True}
    resolved = resolve(config, StoredCard("w.ckpt", "card", card), logger)
    assert resolved.input_size == 320  # command line over the card
    assert resolved.letterbox is False and resolved.spec.labels == ["cat", "dog", "fox"]  # the user's file
    assert resolved.spec.anchor_scales == card["anchor_scales"]  # the card over configs/yolov3_tiny.yaml
    assert resolved.spec.coco_ids == [7, 8, 9] and resolved.spec.num_classes == 3 and resolved.spec.input_centering
    assert resolved.spec.model_name == "yolov3_tiny"  # not in the card: the package's config
    assert resolved.spec.backbone_layers == [1, 2, 8, 8, 4]  # not in the card: default_config.yaml
    assert len(records) == 1 and records[0].levelno == logging.INFO
    line = records[0].getMessage()
    assert "from command line: input_size 320" in line and f"from {mine}: names [\"cat\", \"dog\", \"fox\"], " \
        "letterbox False" in line and "from w.ckpt's card: num_classes 3, category_ids [7, 8, 9], anchors" in line
    with pytest.raises(UserError) as err:
        resolve(config, StoredCard("m.onnx", "card", card), logger, strict=True)
    assert str(err.value) == "labels [\"cat\", \"dog\", \"fox\"] (" + str(mine) + ") contradicts m.onnx's card: " \
        "names [\"a\", \"b\", \"c\"]"


def test_older_checkpoints_load_with_one_warning(tmp_path, log):
    """train.py's values before the card, and no card at all: what was assumed, in one warning."""
    import numpy as np
    import mindspore as ms
    from model_utils.config import load_config
    from src.formats.checkpoint import save_checkpoint
    from src.formats.model_card import open_weights, resolve
    logger, records = log
    w = {"w": ms.Parameter(ms.Tensor(np.zeros(1, np.float32)), name="w")}
    save_checkpoint(w, str(tmp_path / "older.ckpt"), {"num_classes": 2, "labels": "a\nb", "coco_ids": "4,5",
                                                      "anchor_scales": "[[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], "
                                                                       "[11, 12]]", "input_centering": 1})
    save_checkpoint(w, str(tmp_path / "none.ckpt"))
    config = load_config(["--config_path", TINY_CFG])
    older = resolve(config, open_weights(str(tmp_path / "older.ckpt"))[0], logger)
    assert (older.spec.num_classes, older.spec.labels, older.spec.coco_ids) == (2, ["a", "b"], [4, 5])
    assert older.spec.anchor_scales[0] == [1, 2] and older.spec.input_centering  # as the older layout says
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert warnings == [f"{tmp_path / 'older.ckpt'} has the older layout (no model card): assumed architecture "
                        "yolov3_tiny, backbone_layers [1, 2, 8, 8, 4], anchor_mask [[3, 4, 5], [0, 1, 2]], "
                        "input_size 416, letterbox True"]
    records.clear()
    bare = resolve(config, open_weights(str(tmp_path / "none.ckpt"))[0], logger)
    assert bare.spec.num_classes == 80 and not bare.spec.input_centering  # not the tiny recipe's centring
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"{tmp_path / 'none.ckpt'} has no model card: assumed "
                                                         "architecture yolov3_tiny")
    assert "names person, bicycle, car, ... (80)" in warnings[0] and "input_centering False" in warnings[0]


def test_bad_cards_are_one_error(tmp_path):
    import numpy as np
    import mindspore as ms
    from src.errors import UserError
    from src.formats.checkpoint import save_checkpoint
    from src.formats.model_card import open_weights
    w = {"w": ms.Parameter(ms.Tensor(np.zeros(1, np.float32)), name="w")}
    for text, message in [("{not json", "its model_card is not JSON"),
                          ('{"num_classes": 0}', "its model_card has an invalid num_classes: 0"),
                          ('{"input_size": 300}', "its model_card has an invalid input_size: 300"),
                          ('{"names": ["a", 1]}', "its model_card has an invalid names")]:
        path = str(tmp_path / "bad.ckpt")
        save_checkpoint(w, path, {"model_card": text})
        with pytest.raises(UserError, match=None) as err:
            open_weights(path)
        assert message in str(err.value)


def test_converted_coco_model_exports_carry_the_card(tiny_ckpt, shared, tmp_path):
    """The converted COCO yolov3-tiny's checkpoint, MINDIR (user_info) and ONNX carry COCO's 80 names and ids,
    darknet's input_centering (off) and the weights' checksum."""
    import export
    from model_utils.config import load_config
    from src.formats.model_card import open_weights
    coco = json.loads(open(os.path.join(COCO_TINY, "annotations", "instances_val2017.json")).read())["categories"]
    cards = {"ckpt": open_weights(tiny_ckpt)[0]}
    for fmt in ("MINDIR", "ONNX"):
        path = export.export_model(load_config(["--ckpt_file", tiny_ckpt, "--file_name", str(tmp_path / "m"),
                                                "--file_format", fmt, "--testing_shape", "320"]))
        cards[fmt] = open_weights(path)[0]
    for name, card in cards.items():
        assert card.layout == "card", name
        assert card.values["coco_ids"] == [c["id"] for c in coco]
        assert [n.replace(" ", "") for n in card.values["labels"]][:4] == ["person", "bicycle", "car", "motorbike"]
        assert card.values["model_name"] == "yolov3_tiny" and card.values["input_centering"] is False
        assert card.weights_checksum == cards["ckpt"].weights_checksum and len(card.weights_checksum) == 16
    assert cards["ckpt"].values["testing_shape"] == 416 and cards["ONNX"].values["testing_shape"] == 320

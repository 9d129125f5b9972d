"""The config loader: defaults, per-model overrides, command-line values and their errors."""
import ast
import os

import pytest

from conftest import REPO, TINY_CFG
from model_utils.config import load_config
from src.errors import UserError


def test_default_is_darknet53():
    c = load_config([])
    assert c.model_name == "yolov3_darknet53"
    assert len(c.anchor_scales) == 9 and c.anchor_mask == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
    assert len(c.labels) == c.num_classes == len(c.coco_ids) == 80


def test_override_file_changes_only_its_keys():
    c = load_config(["--config_path", TINY_CFG])
    assert c.model_name == "yolov3_tiny"
    assert c.anchor_mask == [[3, 4, 5], [0, 1, 2]]
    assert c.nms_thresh == load_config([]).nms_thresh


def test_command_line_values_are_typed():
    c = load_config(["--letterbox", "False", "--testing_shape", "320", "--nms_thresh", "0.5",
                     "--anchor_scales", "1,2,3,4", "--backbone_layers", "1,1,1,1,1", "--labels", "a,b"])
    assert c.letterbox is False and c.testing_shape == 320 and c.nms_thresh == 0.5
    assert c.anchor_scales == [[1, 2], [3, 4]] and c.backbone_layers == [1, 1, 1, 1, 1]
    assert c.labels == ["a", "b"]
    assert load_config(["--anchor_mask", "[[0,1],[2]]"]).anchor_mask == [[0, 1], [2]]


@pytest.mark.parametrize("argv, message", [
    (["--no_such_key", "1"], "unknown option --no_such_key"),
    (["--testing_shape", "big"], "testing_shape expects int"),
    (["--letterbox", "maybe"], "letterbox expects bool"),
    (["--nms_thresh", "x"], "nms_thresh expects float"),
    (["--anchor_scales", "1,2,3"], "anchor_scales expects list"),
    (["--model_name", "yolov9"], "model_name must be one of"),
    (["--config_path", "/nonexistent.yaml"], "config file not found"),
])
def test_bad_values_are_clear_errors(argv, message):
    with pytest.raises(UserError, match=message):
        load_config(argv)


def test_override_file_with_unknown_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name: yolov3_tiny\nnot_a_key: 3\n")
    with pytest.raises(UserError, match="unknown config key 'not_a_key'"):
        load_config(["--config_path", str(bad)])
    bad.write_text("testing_shape: [1, 2]\n")
    with pytest.raises(UserError, match="testing_shape expects int"):
        load_config(["--config_path", str(bad)])


@pytest.mark.parametrize("key", ["is_distributed", "is_save_on_master", "need_profiler", "label_smooth", "letterbox",
                                 "enable_modelarts", "resume"])
def test_every_boolean_key_takes_true_false_and_1_0(key, tmp_path):
    for text, value in (("True", True), ("1", True), ("false", False), ("0", False)):
        assert getattr(load_config([f"--{key}", text]), key) is value
    override = tmp_path / "flags.yaml"
    for yaml_value, value in (("1", True), ("0", False), ("True", True)):
        override.write_text(f"{key}: {yaml_value}\n")
        assert getattr(load_config(["--config_path", str(override)]), key) is value
    with pytest.raises(UserError, match=f"{key} expects bool"):
        load_config([f"--{key}", "2"])


def test_model_names_come_from_the_registry():
    from src.yolo import MODELS
    assert load_config(["--model_name", "yolov3_tiny"]).model_name == "yolov3_tiny"
    with pytest.raises(UserError, match=", ".join(MODELS)):
        load_config(["--model_name", "yolov9"])


@pytest.mark.parametrize("script", ["train.py", "eval.py", "predict.py", "export.py", "benchmark.py"])
def test_scripts_set_the_openmp_spin_count_before_mindspore_loads_openmp(script):
    """libgomp reads GOMP_SPINCOUNT once, when `import mindspore` (or cv2) loads it: model_utils, which sets it,
    must come first (a training step here took 1.2 s instead of 1.0 s beside another process without it)."""
    tree = ast.parse(open(os.path.join(REPO, script)).read())
    names = [node.names[0].name if isinstance(node, ast.Import) else node.module for node in tree.body
             if isinstance(node, (ast.Import, ast.ImportFrom))]
    # the package's own modules load MindSpore too; importing model_utils.x runs model_utils first
    loaders = [name.split(".")[0] for name in names if name.split(".")[0] in ("mindspore", "cv2", "src", "model_utils")]
    assert loaders[0] == "model_utils", names

"""The config loader: defaults, per-model overrides, command-line values and their errors."""
import ast
import os
import subprocess
import sys

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


def test_model_names_allowed_are_the_registrys():
    from src.models.yolo import MODELS
    assert load_config(["--model_name", "yolov3_tiny"]).model_name == "yolov3_tiny"
    with pytest.raises(UserError, match=", ".join(MODELS)):
        load_config(["--model_name", "yolov9"])


@pytest.mark.parametrize("script", ["train.py", "eval.py", "predict.py", "export.py", "benchmark.py"])
def test_scripts_set_the_openmp_spin_count_before_mindspore_loads_openmp(script):
    """libgomp reads GOMP_SPINCOUNT once, when `import mindspore` (or cv2) loads it: set_up_process, which sets it,
    must run before anything that may load them (a training step here took 1.2 s instead of 1.0 s beside another
    process without it)."""
    tree = ast.parse(open(os.path.join(REPO, script)).read())
    statements = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            statements.append(node.names[0].name)
        elif isinstance(node, ast.ImportFrom):
            statements.append(node.module)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            statements.append(f"{ast.unparse(node.value.func)}()")
    loaders = [s for s in statements if s.split(".")[0] in ("mindspore", "cv2", "src", "model_utils", "numpy")
               or s.endswith("()")]
    assert loaders[:2] == ["src.cpu.process", "set_up_process()"], statements


def test_importing_the_package_changes_nothing_in_the_process():
    """Imports have no side effects: the OpenMP spin count and the oneDNN cap come from set_up_process only."""
    code = ("import os, model_utils.config, src.models.yolo, src.engine.detector, src.engine.train_step; "
            "from src.cpu import onednn; lib = onednn._mindspore_dnnl(); "
"print(os.environ.get('GOMP_SPINCOUNT'), "
            "onednn.isa_name(lib.dnnl_get_effective_cpu_isa()) if lib else 'none')")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    spin, isa = out.stdout.split()[-2:]
    assert spin == "None"
    with open("/proc/cpuinfo") as f:
        avx512 = "avx512f" in f.read().split()
    assert isa == "none" or (isa != "AVX2") == avx512, isa


CONFIGS = os.path.join(REPO, "configs")
FINETUNE_CFG = os.path.join(CONFIGS, "yolov3_tiny_finetune.yaml")
NEW_KEYS = {"recipe", "recipe_scratch", "recipe_finetune", "ema", "ema_decay", "config_path"}


def shipped_configs():
    return sorted(os.path.join(folder, f) for folder, _, files in os.walk(CONFIGS) for f in files
                  if f.endswith(".yaml"))


def built_on(path):
    """The files `path` builds on: its bases (recursively) and the recipe files it or they name, with their bases."""
    from model_utils.config import RECIPE_FILES, read_layers
    layers = read_layers(path)
    files = [f for f, _ in layers[:-1]]
    for _, values in layers:
        for key in RECIPE_FILES.values():
            if values.get(key):
                files += [f for f, _ in read_layers(values[key])]
    return [f for f in dict.fromkeys(files) if f != os.path.abspath(path)]


@pytest.mark.parametrize("path", shipped_configs(), ids=os.path.basename)
def test_no_key_is_repeated_between_a_config_and_the_files_it_builds_on(path):
    from model_utils.config import read_layers
    own = set(read_layers(path)[-1][1])
    assert own
    for other in built_on(path):
        assert not own & set(read_layers(other)[-1][1]), (path, other)


def test_every_config_builds_on_existing_files_and_loads():
    files = shipped_configs()
    assert {os.path.relpath(f, CONFIGS) for f in files} >= {"yolov3_tiny.yaml", "yolov3_tiny_finetune.yaml",
                                                            "recipes/finetune.yaml", "recipes/scratch_adamw.yaml"}
    for f in files:
        assert all(os.path.isfile(b) for b in built_on(f))
        load_config(["--config_path", f])


def effective(config):
    base = load_config([]).to_dict()
    return {k: v for k, v in config.to_dict().items() if v != base[k] and k not in NEW_KEYS}


@pytest.mark.parametrize("name", ["default_config.yaml", "configs/yolov3_tiny.yaml",
                                  "configs/yolov3_tiny_finetune.yaml", "configs/yolov3_mobilenetv2.yaml",
                                  "configs/yolov3_spp.yaml"])
def test_each_config_from_scratch_has_the_values_it_had_before_configs_composed(name):
    """tests/effective_configs.json: each file's values that differ from default_config.yaml, as the loader of
    commit 9971494 (one file, no bases, no recipes) gave them."""
    import json
    want = json.load(open(os.path.join(REPO, "tests", "effective_configs.json")))[name]
    assert effective(load_config(["--config_path", os.path.join(REPO, name)])) == want


@pytest.fixture
def weights_here(tmp_path, monkeypatch):
    """A (blank) w.ckpt in the working folder: the loader checks that weight files exist."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.ckpt").write_bytes(b"")


def test_the_tiny_config_from_weights_gets_the_fine_tuning_values_but_the_users(weights_here):
    """The issue's command names --lr, not --optimizer: it trains with the fine-tuning recipe's momentum SGD."""
    import json
    want = json.load(open(os.path.join(REPO, "tests", "effective_configs.json")))["configs/yolov3_tiny_finetune.yaml"]
    for start in ("--resume_yolo", "--pretrained_backbone"):
        c = load_config(["--config_path", TINY_CFG, start, "w.ckpt", "--lr", "0.001", "--warmup_epochs", "1"])
        key = start[2:]
        assert effective(c) == {**{k: v for k, v in want.items() if k != "lr"}, key: "w.ckpt"}  # lr: the default's
        assert c.recipe == "finetune" and c.optimizer == "momentum" and c.lr == 0.001
        assert c.recipe_note.startswith("recipe finetune (configs/recipes/finetune.yaml): training starts from "
                                        f"the weights of {key} w.ckpt")
        assert c.source("lr") == "command line" and c.source("optimizer") == "configs/recipes/finetune.yaml"
        assert c.source("model_name") == "configs/yolov3_tiny.yaml" and c.source("nms_thresh") == "default_config.yaml"
    finetune = load_config(["--config_path", FINETUNE_CFG, "--resume_yolo", "w.ckpt", "--lr", "0.001"])
    assert finetune.to_dict() == {**c.to_dict(), "resume_yolo": "w.ckpt", "pretrained_backbone": "",
                                  "config_path": FINETUNE_CFG}


def test_the_user_decides_over_the_start(tmp_path, weights_here):
    """--recipe, or any key of the user's config or command line, wins over the recipe the start picks."""
    scratch = load_config(["--config_path", TINY_CFG, "--resume_yolo", "w.ckpt", "--recipe", "scratch"])
    assert scratch.optimizer == "adamw" and scratch.lr == 0.0015 and scratch.recipe == "scratch"
    assert "command line names it" in scratch.recipe_note
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"_base_: {TINY_CFG}\noptimizer: adamw\nnum_classes: 3\n")
    c = load_config(["--config_path", str(mine), "--resume_yolo", "w.ckpt"])
    assert (c.optimizer, c.lr, c.num_classes, c.model_name) == ("adamw", 0.005, 3, "yolov3_tiny")
    assert c.source("optimizer") == str(mine) and c.is_set("num_classes") and not c.is_set("lr")
    assert c.provenance()[0].startswith("configs/recipes/finetune.yaml: head_init_std 0.01, lr_scheduler")
    assert "adamw" not in c.provenance()[0]


def test_bases_compose_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("model_name: yolov3_tiny\nlr: 0.1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("lr: 0.2\nnms_thresh: 0.3\n")
    (tmp_path / "c.yaml").write_text("_base_: [a.yaml, sub/b.yaml]\nnms_thresh: 0.4\n")
    c = load_config(["--config_path", str(tmp_path / "c.yaml")])
    assert (c.model_name, c.lr, c.nms_thresh) == ("yolov3_tiny", 0.2, 0.4)
    assert c.source("lr") == str(tmp_path / "sub" / "b.yaml") and c.source("nms_thresh") == str(tmp_path / "c.yaml")


@pytest.mark.parametrize("files, message", [
    ({"c.yaml": "_base_: a.yaml\n", "a.yaml": "_base_: c.yaml\n"}, "build on each other in a circle: "),
    ({"c.yaml": "_base_: missing.yaml\n"}, "config file not found: .*missing.yaml"),
    ({"c.yaml": "_base_: [1]\n"}, "_base_ must be a file name or a list of them"),
    ({"c.yaml": "_base_: a.yaml\n", "a.yaml": "no_key: 1\n"}, "a.yaml: unknown config key 'no_key'"),
    ({"c.yaml": "model_name: yolov3_tiny\nrecipe_scratch: r.yaml\n", "r.yaml": "recipe: finetune\n"},
     "r.yaml: a recipe cannot choose recipes"),
    ({"c.yaml": "recipe: sometimes\n"}, "recipe must be one of auto, scratch, finetune"),
])
def test_bad_compositions_are_clear_errors(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=message):
        load_config(["--config_path", str(tmp_path / "c.yaml")])


def test_help_says_where_each_value_comes_from(capsys):
    with pytest.raises(SystemExit):
        load_config(["--config_path", TINY_CFG, "--resume_yolo", "w.ckpt", "--lr", "0.001", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: momentum, from configs/recipes/finetune.yaml;" in text
    assert "(default: 0.001, from command line)" in text
    assert "(default: yolov3_tiny, from configs/yolov3_tiny.yaml;" in text
    assert "recipe finetune (configs/recipes/finetune.yaml): training starts from the weights of resume_yolo" in text

"""Deployed graphs: eval.py --onnx_file scores an export as eval.py scores its weights; the int8 export
(export.py --quantize int8) keeps the AP; OpenVINO agrees with ONNX Runtime; bad input is one error line."""
import dataclasses
import json
import os

import pytest

from conftest import COCO_TINY, SAMPLES, THREE_CLASSES, TINY_CFG, run_script
from test_cli_errors import assert_clean_error

VAL_ANN = os.path.join(COCO_TINY, "annotations", "instances_val2017.json")
VAL_IMAGES = os.path.join(COCO_TINY, "val2017")


def export(ckpt: str, name: str, *extra: str) -> str:
    """export.py's export, in this process: yolov3-tiny at 416, batch 8 (the eval's batches), stretched input."""
    import export as export_script
    from model_utils.config import load_config
    return export_script.export_model(load_config([
        "--config_path", TINY_CFG, "--ckpt_file", ckpt, "--file_name", name, "--file_format", "ONNX",
        "--batch_size", "8", "--testing_shape", "416", "--letterbox", "False", *extra]))


@pytest.fixture(scope="module")
def fp32_onnx(tiny_ckpt, tmp_path_factory) -> str:
    return export(tiny_ckpt, str(tmp_path_factory.mktemp("fp32") / "tiny"))


@pytest.fixture(scope="module")
def int8_onnx(tiny_ckpt, tmp_path_factory) -> str:
    """Calibrated on 8 images of the train split (the AP is the val split's)."""
    return export(tiny_ckpt, str(tmp_path_factory.mktemp("int8") / "tiny"), "--quantize", "int8",
                  "--calibration_dir", os.path.join(COCO_TINY, "train2017"), "--calibration_images", "8")


def graph_stats(path: str, out, runtime: str = "onnxruntime", ann_file: str = VAL_ANN) -> dict:
    """eval.py --onnx_file's stats, in this process (test_onnx_eval_is_eval_of_the_weights runs the script), with
    no model flags: the card gives them."""
    from model_utils.config import load_config
    from src.engine.evaluation import evaluate_detector
    from src.engine.onnx_runtime import graph_detector
    from src.logger import get_logger
    config = load_config(["--onnx_file", path, "--runtime", runtime])
    return evaluate_detector(config, graph_detector(config, get_logger()), ann_file, VAL_IMAGES, str(out), get_logger())


@pytest.fixture(scope="module")
def fp32_stats(fp32_onnx, tmp_path_factory) -> dict:
    """The fp32 export's stats in ONNX Runtime on coco_tiny val, stretched."""
    return graph_stats(fp32_onnx, tmp_path_factory.mktemp("fp32_eval"))


def test_onnx_eval_is_eval_of_the_weights(tiny_ckpt, fp32_onnx, tmp_path):
    """On 16 val images: eval.py --onnx_file logs, writes and scores as eval.py on the exported checkpoint, with
    no model flags (the export's card: yolov3-tiny, stretched)."""
    ann = json.loads(open(VAL_ANN).read())
    keep = {im["id"] for im in ann["images"][:16]}
    ann.update(images=ann["images"][:16], annotations=[a for a in ann["annotations"] if a["image_id"] in keep])
    ann_file = str(tmp_path / "ann.json")
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    proc = run_script("eval.py", "--ann_file", ann_file, "--image_dir", VAL_IMAGES, "--eval_dir",
                      str(tmp_path / "onnx"), "--onnx_file", fp32_onnx)  # no model flags: the card says
    assert "batch 8, 416x416, 80 classes, in onnxruntime, stretch" in proc.stdout
    assert "=============coco eval result=========" in proc.stdout and "per-class AP" in proc.stdout
    onnx_stats = json.loads((tmp_path / "onnx" / "stats.json").read_text())
    run_script("eval.py", "--config_path", TINY_CFG, "--ann_file", ann_file, "--image_dir", VAL_IMAGES,
               "--letterbox", "False", "--eval_dir", str(tmp_path / "ckpt"), "--pretrained", tiny_ckpt)
    ckpt_stats = json.loads((tmp_path / "ckpt" / "stats.json").read_text())
    assert set(onnx_stats) == set(ckpt_stats) and onnx_stats["images"] == 16
    for key in ("AP", "AP50", "AR100"):
        assert abs(onnx_stats[key] - ckpt_stats[key]) <= 1e-4, (key, onnx_stats[key], ckpt_stats[key])
    assert ckpt_stats["AP"] > 0.1


def test_int8_export_keeps_the_ap(fp32_onnx, fp32_stats, int8_onnx, tmp_path):
    """QDQ int8 with per-channel weights (opset 13); the heads' output convolutions and the decode float; the AP on
    coco_tiny val (stretched) within 0.01 of the fp32 export's; the fp32 export's model card."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(int8_onnx)
    assert model.opset_import[0].version >= 13
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    int8_convs = [n for n in convs if n.input[1].endswith("_DequantizeLinear_Output")]
    assert len(convs) == 13 and len(int8_convs) == 11
    assert all(weights[n.input[1]].dtype.name == "float32" and weights[n.input[1]].shape[0] == 255
               for n in convs if n not in int8_convs)  # the heads' 3 x (5 + 80) outputs
    assert {n.op_type for n in model.graph.node} >= {"QuantizeLinear", "DequantizeLinear", "LeakyRelu", "Exp"}
    int8 = graph_stats(int8_onnx, tmp_path)
    from src.formats.model_card import open_weights
    int8_card, fp32_card = open_weights(int8_onnx)[0], open_weights(fp32_onnx)[0]
    assert int8_card.layout == "card" and int8_card == dataclasses.replace(fp32_card, path=int8_onnx)
    assert fp32_stats["AP"] > 0.14
    assert fp32_stats["AP"] - int8["AP"] <= 0.01, (fp32_stats["AP"], int8["AP"])


def test_openvino_scores_as_onnxruntime(fp32_onnx, fp32_stats, tmp_path):
    pytest.importorskip("openvino")
    ort_stats = fp32_stats
    ov_stats = graph_stats(fp32_onnx, tmp_path, "openvino")
    assert abs(ov_stats["AP"] - ort_stats["AP"]) <= 0.005, (ov_stats["AP"], ort_stats["AP"])
    assert abs(ov_stats["AP50"] - ort_stats["AP50"]) <= 0.005


def test_three_class_export_scores_and_predicts_from_its_card(three_class, tmp_path):
    """A 3-class model's ONNX export (ids 1..3, not COCO's), with no model flags: eval.py --onnx_file gives
    eval.py --pretrained's AP to 1e-4 in ONNX Runtime and OpenVINO, under the model's class names; predict.py
    --onnx_file names its classes."""
    import export as export_script
    from model_utils.config import load_config
    ckpt, data = three_class
    onnx_path = export_script.export_model(load_config([
        "--ckpt_file", ckpt, "--file_name", str(tmp_path / "three"), "--file_format", "ONNX", "--batch_size", "8"]))
    run_script("eval.py", "--data_dir", data, "--pretrained", ckpt, "--eval_dir", str(tmp_path / "ckpt"))
    proc = run_script("eval.py", "--data_dir", data, "--onnx_file", onnx_path, "--eval_dir", str(tmp_path / "onnx"))
    assert "batch 8, 416x416, 3 classes, in onnxruntime, letterbox" in proc.stdout
    want = json.loads((tmp_path / "ckpt" / "stats.json").read_text())
    ann_file = os.path.join(data, "annotations", "instances_val2017.json")
    for stats in (json.loads((tmp_path / "onnx" / "stats.json").read_text()),
                  graph_stats(onnx_path, tmp_path / "openvino", "openvino", ann_file)):
        assert abs(stats["AP"] - want["AP"]) <= 1e-4 and abs(stats["AP50"] - want["AP50"]) <= 1e-4
        assert [(r["category_id"], r["name"]) for r in stats["per_class"]] == list(enumerate(THREE_CLASSES, 1))
    assert want["AP"] > 0.05  # the COCO model's AP on these 3 classes of coco_tiny val: 0.084
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(os.listdir(VAL_IMAGES))[:4]:
        os.symlink(os.path.join(VAL_IMAGES, name), images / name)
    run_script("predict.py", "--onnx_file", onnx_path, "--input", str(images), "--output_dir",
               str(tmp_path / "predict"))
    records = json.loads((tmp_path / "predict" / "detections.json").read_text())
    assert len(os.listdir(tmp_path / "predict")) == 5  # 4 drawn images and detections.json
    assert records and {(r["category_id"], r["category_name"]) for r in records} <= set(enumerate(THREE_CLASSES, 1))
    assert "person" in {r["category_name"] for r in records}


def test_openvino_missing_is_one_error(fp32_onnx, monkeypatch):
    import sys
    from src.engine.onnx_runtime import openvino_session
    from src.errors import UserError
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(UserError, match=r"--runtime openvino needs OpenVINO, an optional extra: pip install"):
        openvino_session(fp32_onnx)


def test_bad_quantize_options_are_one_error(tiny_ckpt, tmp_path):
    """Checked before anything is built; the script's exit is one line (the first case runs it)."""
    import export
    from model_utils.config import load_config
    from src.errors import UserError
    (tmp_path / "empty").mkdir()
    base = ["--config_path", TINY_CFG, "--ckpt_file", tiny_ckpt, "--file_name", str(tmp_path / "m"),
            "--file_format", "ONNX"]
    proc = run_script("export.py", *base, "--quantize", "int8", "--calibration_dir", str(tmp_path / "none"),
                      check=False)
    assert_clean_error(proc, f"calibration_dir not found: {tmp_path / 'none'}")
    cases = [
        (["--quantize", "int8"], "--quantize int8 needs --calibration_dir DIR"),
        (["--quantize", "int8", "--calibration_dir", str(tmp_path / "empty")], "no images (.jpg"),
        (["--quantize", "int8", "--calibration_dir", VAL_IMAGES, "--calibration_images", "0"],
         "calibration_images must be at least 1, got 0"),
        (["--quantize", "int8", "--calibration_dir", VAL_IMAGES, "--file_format", "MINDIR"],
         "--quantize int8 writes ONNX only (--file_format ONNX), not MINDIR"),
        (["--calibration_dir", VAL_IMAGES], "--calibration_dir applies to --quantize int8 only"),
    ]
    for args, message in cases:
        with pytest.raises(UserError, match=None) as err:
            export.export_model(load_config(base + args))
        assert message in str(err.value)
    assert os.listdir(tmp_path) == ["empty"]


def overflowing_graph(path: str) -> str:
    """A 32x32 graph whose decode overflows on real images, as yolov3's with untrained weights does (exp of raw
    outputs in the tens of thousands): a body convolution, a head convolution, Exp and Mul (calibrated: inf)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.uniform(0.5, 1, shape).astype(np.float32) * scale, name)
               for name, shape, scale in (("w1", (4, 3, 3, 3), 1.0), ("w2", (2, 4, 1, 1), 1e3))]
    two = numpy_helper.from_array(np.array(2, np.float32), "two")
    nodes = [helper.make_node("Conv", ["images", "w1"], ["body"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["body", "w2"], ["head"]),  # the head: float, as the export's
             helper.make_node("Exp", ["head"], ["sizes"]),
             helper.make_node("Mul", ["sizes", "two"], ["boxes"])]
    graph = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                                [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 2, 32, 32])],
                              weights + [two])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_calibration_on_overflowing_activations_is_one_error(tmp_path):
    """A UserError naming the problem, and no int8 file left behind."""
    from src.errors import UserError
    from src.formats.quantize import calibration_images, quantize_int8
    fp32 = overflowing_graph(str(tmp_path / "overflow.onnx"))
    with pytest.raises(UserError, match=r"activations on the calibration images are not finite"):
        quantize_int8(fp32, str(tmp_path / "overflow_int8.onnx"), calibration_images(SAMPLES, 2), 32, 1, False)
    assert sorted(os.listdir(tmp_path)) == ["overflow.onnx"]

def test_bad_onnx_files_are_one_error(fp32_onnx, tiny_ckpt, tmp_path):
    import onnx
    from onnx import TensorProto, helper
    from model_utils.config import load_config
    from src.engine.onnx_runtime import graph_detector
    from src.errors import UserError
    from src.logger import get_logger
    (tmp_path / "not.onnx").write_bytes(b"\x08\x07garbage, not protobuf\xff\xff")
    proc = run_script("eval.py", "--config_path", TINY_CFG, "--data_dir", COCO_TINY, "--onnx_file",
                      str(tmp_path / "not.onnx"), "--eval_dir", str(tmp_path / "out"), check=False)
    assert_clean_error(proc, f"{tmp_path / 'not.onnx'} is not an ONNX file")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 416, 416])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 416, 416])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])),
              str(tmp_path / "relu.onnx"))
    cases = [
        (["--onnx_file", str(tmp_path / "relu.onnx")], "is not an exported detections graph (want input 'images'"),
        (["--onnx_file", str(tmp_path / "gone.onnx")], "ONNX file not found"),
        (["--onnx_file", fp32_onnx, "--testing_shape", "320"],
         f"testing_shape 320 (command line) contradicts {fp32_onnx}'s graph: input_size 416"),
        (["--onnx_file", fp32_onnx, "--per_batch_size", "2"], "graph: per_batch_size 8"),
        (["--onnx_file", fp32_onnx, "--num_classes", "3"], "num_classes 3 (command line) contradicts"),
        (["--onnx_file", fp32_onnx, "--anchor_scales", "1,2,3,4,5,6,7,8,9,10,11,12"],
         f"anchor_scales [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]] (command line) contradicts "
         f"{fp32_onnx}'s card: anchors [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]]"),
    ]
    for args, message in cases:
        with pytest.raises(UserError) as err:
            graph_detector(load_config(["--config_path", TINY_CFG] + args), get_logger())
        assert message in str(err.value)
    import eval as eval_script
    for args, message in [(["--onnx_file", fp32_onnx, "--pretrained", tiny_ckpt], "--onnx_file or --pretrained"),
                          (["--pretrained", tiny_ckpt, "--runtime", "openvino"], "--runtime applies to --onnx_file")]:
        with pytest.raises(UserError) as err:
            eval_script.run_eval(load_config(["--config_path", TINY_CFG, "--data_dir", COCO_TINY] + args))
        assert message in str(err.value)


def test_cpp_app_lowering_refuses_the_int8_graph(int8_onnx, tmp_path):
    """OpenCV 4.6's DNN module (the C++ app's CPU backend) cannot load a QDQ graph: the lowering says so."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(TINY_CFG), "..", "ascend310_infer"))
    from onnx_for_opencv import lower_file
    from src.errors import UserError
    with pytest.raises(UserError, match="is an int8 \\(QDQ\\) graph, which OpenCV 4.6's DNN module cannot load"):
        lower_file(int8_onnx, str(tmp_path / "lowered.onnx"))
    assert not os.listdir(tmp_path)

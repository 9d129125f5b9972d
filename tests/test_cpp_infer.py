"""ascend310_infer (C++ inference): shared code against the Python implementation, COCO AP against
eval.py through scripts/run_infer_cpp.sh, and bad input."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import COCO_TINY, REPO, TINY_CFG, _need, run_script
from postprocess import read_result_file
from src.data.transforms import boxes_to_image, letterbox, preprocess, stretch
from src.engine.detector import clip_to_image
from src.engine.nms import nms, select_detections

INFER_DIR = os.path.join(REPO, "ascend310_infer")
RUN_INFER = os.path.join(REPO, "scripts", "run_infer_cpp.sh")
ANN = os.path.join(COCO_TINY, "annotations", "instances_val2017.json")
VAL = os.path.join(COCO_TINY, "val2017")


def script_env(build_dir: str) -> dict:
    return dict(os.environ, BUILD_DIR=build_dir, PYTHON=sys.executable)


def have_cpp_toolchain() -> bool:
    if not (shutil.which("pkg-config") and shutil.which("cmake")):
        return False
    return subprocess.run(["pkg-config", "--exists", "opencv4"]).returncode == 0


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory):
    """ascend310_infer built once by its build.sh; the build folder."""
    _need("libopencv-dev and cmake (see .ci/run)", have_cpp_toolchain())
    build_dir = str(tmp_path_factory.mktemp("cpp_build"))
    proc = subprocess.run(["bash", os.path.join(INFER_DIR, "build.sh")], env=script_env(build_dir),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Ascend backend: " in proc.stdout
    with open(os.path.join(build_dir, "ascend_backend"), "w") as f:
        f.write("on" if "Ascend backend: on" in proc.stdout else "off")
    return build_dir


def ascend_backend_built(build_dir: str) -> bool:
    with open(os.path.join(build_dir, "ascend_backend")) as f:
        return f.read() == "on"


def export_tiny_onnx(ckpt: str, folder, *extra: str) -> str:
    name = str(folder / "yolov3_tiny")
    run_script("export.py", "--config_path", TINY_CFG, "--ckpt_file", ckpt, "--file_name", name,
               "--file_format", "ONNX", "--batch_size", "1", "--testing_shape", "416", *extra)
    return name + ".onnx"


@pytest.fixture(scope="module")
def tiny_onnx(tiny_ckpt, tmp_path_factory):
    """The converted darknet yolov3-tiny exported to ONNX, batch 1, 416."""
    return export_tiny_onnx(tiny_ckpt, tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def lowered_onnx(tiny_onnx):
    out = tiny_onnx.replace(".onnx", "_opencv.onnx")
    proc = run_script(os.path.join("ascend310_infer", "onnx_for_opencv.py"), "--input", tiny_onnx, "--output", out)
    assert "max |diff| in ONNX Runtime 0" in proc.stdout
    return out


def check(build_dir: str, *args: str, tmp_path) -> subprocess.CompletedProcess:
    proc = subprocess.run([os.path.join(build_dir, "yolo_check"), *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc


def app(build_dir: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(build_dir, "main"), *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


def assert_one_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in lines[0], lines[0]


# ---- (a) the shared C++ code against the Python implementation, on random inputs

def random_rows(rng: np.random.Generator, n: int = 600, classes: int = 6, size: int = 416) -> np.ndarray:
    """Decoded rows in clusters (so that NMS has work), with exact score ties, empty boxes, boxes
    reaching out of the image and rows with an infinity or NaN (as from diverged weights)."""
    centres = rng.uniform(0, size, (12, 2))
    cxcy = centres[rng.integers(0, 12, n)] + rng.normal(0, 8, (n, 2))
    wh = rng.uniform(4, 120, (n, 2))
    obj = rng.uniform(0, 1, (n, 1)) ** 2
    cls = rng.uniform(0, 1, (n, classes)) ** 3
    rows = np.concatenate([cxcy, wh, obj, cls], 1).astype(np.float32)
    rows[rng.integers(0, n, 40), 4:] = rows[0, 4:]
    rows[:5, 2:4] = 0
    rows[5:15, 2:4] *= 8
    rows[15:20, 2] = np.inf
    rows[20:23, 3] = np.nan
    rows[23:25, 0] = -np.inf
    rows[25:27, 5] = np.nan
    rows[27:29, 2:4] = 1e20  # finite, but the area overflows float32
    return rows


def test_nms_matches_python(cpp_build, tmp_path):
    rng = np.random.default_rng(1)
    for case in range(10):
        n = int(rng.integers(1, 300))
        boxes = np.concatenate([rng.uniform(0, 200, (n, 2)), rng.uniform(0, 60, (n, 2))], 1).astype(np.float32)
        boxes[: n // 10, 2] = 0  # zero-area boxes: IoU 0
        scores = np.round(rng.uniform(0, 1, n), 2).astype(np.float32)  # many ties
        iou = [0.45, 0.3, 0.7][case % 3]
        np.concatenate([boxes, scores[:, None]], 1).astype(np.float32).tofile(tmp_path / "in.f32")
        check(cpp_build, "nms", "in.f32", str(n), str(iou), "out.txt", tmp_path=tmp_path)
        kept = [int(v) for v in (tmp_path / "out.txt").read_text().split()]
        assert kept == nms(boxes, scores, iou).tolist(), case


@pytest.mark.parametrize("score_thr, iou_thr, max_boxes", [(0.005, 0.45, 100), (0.3, 0.5, 7), (0.0, 0.6, 5000)])
def test_decode_matches_python(cpp_build, tmp_path, score_thr, iou_thr, max_boxes):
    rng = np.random.default_rng(int(score_thr * 1000) + max_boxes)
    for case in range(6):
        rows = random_rows(rng)
        h, w = (int(v) for v in rng.integers(50, 900, 2))
        image = np.zeros((h, w, 3), np.uint8)
        mapping = (letterbox if case % 2 == 0 else stretch)(image, 416)[1]
        rows.tofile(tmp_path / "rows.f32")
        proc = check(cpp_build, "decode", "rows.f32", str(rows.shape[0]), str(rows.shape[1]),
                     *(repr(float(v)) for v in mapping[:2]), *(str(v) for v in mapping[2:]), str(w), str(h),
                     str(score_thr), str(iou_thr), str(max_boxes), "out.txt", tmp_path=tmp_path)
        ours = read_result_file(str(tmp_path / "out.txt"))
        boxes, scores, labels, nonfinite = select_detections(rows, score_thr, iou_thr, max_boxes)
        assert int(proc.stdout) == nonfinite == 14
        assert len(ours) == len(labels) > 0, case
        assert [d[0] for d in ours] == labels.tolist()
        np.testing.assert_array_equal(np.array([d[1] for d in ours]), scores)
        ours_boxes = np.stack([d[2] for d in ours])
        np.testing.assert_array_equal(ours_boxes, clip_to_image(boxes_to_image(boxes, mapping), (h, w)))
        assert np.isfinite(ours_boxes).all()
        if max_boxes < 100:
            assert len(ours) == max_boxes


def test_preprocess_matches_python(cpp_build, shared, tmp_path):
    rng = np.random.default_rng(2)
    images = []
    for k, (h, w) in enumerate([(333, 500), (481, 301), (416, 416), (97, 1021)]):
        path = str(tmp_path / f"synthetic{k}.png")
        cv2.imwrite(path, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append(path)
    images += [os.path.join(VAL, name) for name in sorted(os.listdir(VAL))[:4]]
    for path in images:
        for use_letterbox in (True, False):
            proc = check(cpp_build, "preprocess", path, "416", str(int(use_letterbox)), "blob.f32", tmp_path=tmp_path)
            theirs, mapping = preprocess(cv2.imread(path, cv2.IMREAD_COLOR), 416, use_letterbox)
            sx, sy, dx, dy = proc.stdout.split()
            assert (float(sx), float(sy), int(dx), int(dy)) == mapping
            ours = np.fromfile(tmp_path / "blob.f32", np.float32).reshape(theirs.shape)
            # bit-exact here (Debian's OpenCV 4.6 and libjpeg-turbo vs the opencv-python wheel)
            assert np.array_equal(ours, theirs), (path, use_letterbox, np.abs(ours - theirs).max())


def test_card_reader_matches_python(cpp_build, three_class, tmp_path):
    """The app's model card reader (src/model_card.cc) on what export.py writes: an ONNX file's metadata_props,
    a MINDIR's user_info and an AIR file's sidecar; a file without a card has none."""
    import export
    from model_utils.config import load_config
    from src.engine.detector import build_with_weights
    from src.formats.model_card import open_weights, write_sidecar
    ckpt, _ = three_class
    paths = [export.export_model(load_config(["--ckpt_file", ckpt, "--file_name", str(tmp_path / "m"),
                                              "--file_format", fmt, "--testing_shape", "320"]))
             for fmt in ("ONNX", "MINDIR")]
    card = open_weights(paths[0])[0]
    air_card, _ = build_with_weights(load_config(["--ckpt_file", ckpt, "--testing_shape", "320"]), ckpt)
    (tmp_path / "m.air").write_bytes(b"")  # AIR needs an Ascend device to export: its sidecar, as export.py writes it
    write_sidecar(str(tmp_path / "m.air"), air_card)
    paths.append(str(tmp_path / "m.air"))
    want = "found 1\ninput_size 320\nletterbox 1\nnum_classes 3\n1 person\n2 car\n3 bottle\n"
    for path in paths:
        assert check(cpp_build, "card", path, tmp_path=tmp_path).stdout == want, path
    assert card.values["labels"] == ["person", "car", "bottle"] and card.values["testing_shape"] == 320
    assert check(cpp_build, "card", ckpt, tmp_path=tmp_path).stdout.startswith("found 0\n")


# ---- (b) the whole chain against eval.py

def tiny_eval_stats(tiny_ckpt: str, out, *extra: str) -> dict:
    run_script("eval.py", "--config_path", TINY_CFG, "--data_dir", COCO_TINY, "--pretrained", tiny_ckpt,
               "--testing_shape", "416", "--eval_dir", str(out), *extra)
    return json.loads((out / "stats.json").read_text())


@pytest.fixture(scope="module")
def eval_stats(tiny_ckpt, tmp_path_factory):
    return tiny_eval_stats(tiny_ckpt, tmp_path_factory.mktemp("eval"))


def run_infer_cpp(build_dir: str, onnx: str, tmp_path, ann: str = ANN) -> dict:
    """scripts/run_infer_cpp.sh on coco_tiny's val2017 (without CKPT_FILE): its stats.json, after the checks every
    run must pass."""
    env = script_env(build_dir)
    env.pop("CKPT_FILE", None)
    proc = subprocess.run(["bash", RUN_INFER, onnx, VAL, ann, "CPU", "0"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["images"] == 80 and stats["skipped_images"] == 0
    return stats


def assert_same_ap(stats: dict, want: dict) -> None:
    assert abs(stats["AP"] - want["AP"]) <= 0.003, (stats["AP"], want["AP"])
    assert abs(stats["AP50"] - want["AP50"]) <= 0.003, (stats["AP50"], want["AP50"])


def test_run_infer_cpp_matches_eval_ap(cpp_build, tiny_onnx, eval_stats, tmp_path):
    stats = run_infer_cpp(cpp_build, tiny_onnx, tmp_path)
    assert_same_ap(stats, eval_stats)
    assert stats["AP"] > 0.1
    acc = (tmp_path / "acc.log").read_text()
    assert acc.count("Average Precision") == 6 and f"= {stats['AP']:.3f}" in acc
    assert len(os.listdir(tmp_path / "result_Files")) == 80 + 1  # and model_card.json
    timing = (tmp_path / "time_Result" / "test_perform_static.txt").read_text()
    assert "of infer_count 80" in timing and "skipped unreadable: 0" in timing
    assert float(timing.split("average time: ")[1].split(" ms")[0]) > 0


def test_run_infer_cpp_takes_the_model_from_its_card(cpp_build, three_class, tmp_path):
    """A 3-class model (ids 1..3, not COCO's) exported with no model flags and scored without CKPT_FILE,
    IMAGE_SIZE or LETTERBOX: the app reads the card (input size, letterbox, classes) from the ONNX and leaves it
    for postprocess.py's class map; the AP is eval.py's."""
    ckpt, data = three_class
    name = str(tmp_path / "three")
    run_script("export.py", "--ckpt_file", ckpt, "--file_name", name, "--file_format", "ONNX")
    ann = os.path.join(data, "annotations", "instances_val2017.json")
    run_script("eval.py", "--data_dir", data, "--pretrained", ckpt, "--eval_dir", str(tmp_path / "eval"))
    want = json.loads((tmp_path / "eval" / "stats.json").read_text())
    (tmp_path / "cpp").mkdir()
    stats = run_infer_cpp(cpp_build, name + ".onnx", tmp_path / "cpp", ann)
    assert_same_ap(stats, want)
    assert stats["AP"] > 0.05
    log = (tmp_path / "cpp" / "infer.log").read_text()
    assert "model_opencv.onnx: 3 classes (1 person, 2 car, 3 bottle), input 416, letterbox" in log
    card = json.loads((tmp_path / "cpp" / "result_Files" / "model_card.json").read_text())
    assert card["names"] == ["person", "car", "bottle"] and card["category_ids"] == [1, 2, 3]


def test_run_infer_cpp_with_input_centering(cpp_build, tiny_ckpt, eval_stats, tmp_path):
    """A graph that subtracts each image's mean colour first (input_centering) survives the lowering for
    OpenCV and gives eval.py's AP; the same weights without it score differently."""
    centred = ("--input_centering", "True")
    onnx = export_tiny_onnx(tiny_ckpt, tmp_path, *centred)
    want = tiny_eval_stats(tiny_ckpt, tmp_path / "eval", *centred)
    (tmp_path / "cpp").mkdir()
    stats = run_infer_cpp(cpp_build, onnx, tmp_path / "cpp")
    assert_same_ap(stats, want)
    assert stats["AP"] > 0.05 and abs(stats["AP"] - eval_stats["AP"]) > 0.01


# ---- (c) bad input: one clear error line, or a counted skip

def test_app_flag_errors(cpp_build, lowered_onnx, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    model = f"--model_path={lowered_onnx}"
    cases = [
        ([f"--model_path={tmp_path}/none.onnx", f"--dataset_path={VAL}"], "model file not found"),
        ([model, "--dataset_path=" + str(tmp_path / "empty")], "no images"),
        ([model, "--dataset_path=" + str(tmp_path / "notes")], "no images"),
        ([model, "--dataset_path=" + str(tmp_path / "gone")], "image directory not found"),
        ([model, f"--dataset_path={VAL}", "--image_size=400"], "positive multiple of 32"),
        ([model, f"--dataset_path={VAL}", "--image_size", "big"], "--image_size expects an integer"),
        ([model, f"--dataset_path={VAL}", "--letterbox=maybe"], "--letterbox expects true or false"),
        ([model, f"--dataset_path={VAL}", "--device_type=GPU"], "--device_type must be CPU or Ascend"),
        ([model, f"--dataset_path={VAL}", "--aipp_path=" + os.path.join(INFER_DIR, "aipp.cfg")],
         "--aipp_path applies to --device_type Ascend only"),
        ([model, f"--dataset_path={VAL}", "--image_size=320"],
         f"--image_size 320 contradicts the model card of {lowered_onnx}: input_size 416"),
        ([model, f"--dataset_path={VAL}", "--letterbox=false"], "--letterbox false contradicts the model card"),
        ([model, f"--dataset_path={VAL}", "--bogus=1"], "unknown flag --bogus"),
        ([model, "--dataset_path"], "--dataset_path needs a value"),
        ([f"--dataset_path={VAL}"], "missing --model_path"),
    ]
    if not ascend_backend_built(cpp_build):  # the CPU wheel of MindSpore has no C++ API
        cases.append(([model, f"--dataset_path={VAL}", "--device_type=Ascend"], "no Ascend backend"))
    for args, message in cases:
        assert_one_error(app(cpp_build, *args, cwd=tmp_path), message)
    assert not (tmp_path / "result_Files").exists()


def test_app_rejects_unlowered_onnx(cpp_build, tiny_onnx, tmp_path):
    proc = app(cpp_build, f"--model_path={tiny_onnx}", f"--dataset_path={VAL}", cwd=tmp_path)
    assert_one_error(proc, "OpenCV DNN cannot load")
    assert "onnx_for_opencv.py" in proc.stderr


def test_unreadable_images_are_counted(cpp_build, tiny_onnx, shared, tmp_path):
    ann = json.loads(open(ANN).read())
    images = ann["images"][:3]
    data = tmp_path / "images"
    data.mkdir()
    for im in images:
        shutil.copy(os.path.join(VAL, im["file_name"]), data)
    (data / "broken.jpg").write_bytes(b"not a jpeg")
    (data / "empty.png").write_bytes(b"")
    images += [dict(images[0], id=10**9, file_name="broken.jpg")]
    ann.update(images=images, annotations=[a for a in ann["annotations"] if a["image_id"] in {i["id"] for i in images}])
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(["bash", RUN_INFER, tiny_onnx, str(data), str(tmp_path / "ann.json"), "CPU"], cwd=work,
                          env=script_env(cpp_build), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (work / "infer.log").read_text()
    assert "warning: skipping unreadable image" in log and "broken.jpg" in log and "empty.png" in log
    timing = (work / "time_Result" / "test_perform_static.txt").read_text()
    assert "images: 3, skipped unreadable: 2" in timing and "non-finite rows dropped before NMS: 0" in timing
    assert sorted(os.listdir(work / "result_Files")) == sorted(
        [f"{im['file_name']}.txt" for im in images[:3]] + ["model_card.json"])
    stats = json.loads((work / "stats.json").read_text())
    assert stats["images"] == 3 and stats["skipped_images"] == 1


def test_app_fails_when_no_image_is_readable(cpp_build, lowered_onnx, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    proc = app(cpp_build, f"--model_path={lowered_onnx}", f"--dataset_path={tmp_path / 'images'}", cwd=tmp_path)
    assert_one_error(proc, "none of the 1 images")
    assert "warning: skipping unreadable image" in proc.stderr


@pytest.mark.parametrize("args, message", [
    ([], "error: missing MODEL_PATH"),
    (["/no/model.onnx", "{tmp}", "{tmp}/a.json", "CPU"], "MODEL_PATH not found"),
    (["{model}", "/no/images", "{tmp}/a.json", "CPU"], "DATA_PATH not found"),
    (["{model}", "{tmp}", "/no/ann.json", "CPU"], "ANNO_PATH not found"),
    (["{model}", "{tmp}", "{model}", "TPU"], "DEVICE_TYPE must be CPU or Ascend"),
    (["{model}", "{tmp}", "{model}", "CPU", "x"], "DEVICE_ID must be a non-negative integer"),
])
def test_run_infer_cpp_argument_errors(args, message, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(["bash", RUN_INFER, *[a.format(tmp=tmp_path, model=model) for a in args]], cwd=work,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and proc.stderr.startswith("usage: bash scripts/run_infer_cpp.sh")
    assert message in proc.stderr.strip().splitlines()[-1]
    assert not os.listdir(work)


def test_run_infer_cpp_checks_ckpt_file_first(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "a.json").write_text("{}")
    proc = subprocess.run(["bash", RUN_INFER, str(tmp_path / "m.onnx"), str(tmp_path), str(tmp_path / "a.json"), "CPU"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, CKPT_FILE=str(tmp_path / "gone.ckpt")))
    assert proc.returncode != 0 and "CKPT_FILE not found" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "build.log").exists()


def test_build_names_what_is_missing(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    proc = subprocess.run([shutil.which("bash"), os.path.join(INFER_DIR, "build.sh")], capture_output=True, text=True,
                          env=dict(os.environ, PATH=str(bin_dir), BUILD_DIR=str(tmp_path / "build")), timeout=60)
    assert_one_error(proc, "missing cmake g++ pkg-config")
    assert not (tmp_path / "build").exists()


def test_postprocess_errors(shared, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "000000005001.jpg.txt").write_text("0 0.5 1 2 3\n")
    cases = [(str(tmp_path / "gone"), "result folder not found"), (str(tmp_path / "empty"), "no result files"),
             (str(tmp_path / "bad"), "000000005001.jpg.txt:1: expected 'label score x y w h'")]
    for result_dir, message in cases:
        proc = run_script("postprocess.py", "--result_files", result_dir, "--ann_file", ANN, "--output_dir",
                          str(tmp_path / "out"), check=False)
        assert_one_error(proc, message)
    assert_one_error(run_script("postprocess.py", "--result_files", str(tmp_path / "bad"), check=False),
                     "--ann_file")
    assert not (tmp_path / "out").exists()


def test_app_with_diverged_weights(cpp_build, tmp_path):
    """Boxes that decode to inf in the exported graph: left out and counted, every number written finite."""
    from test_nonfinite import INF_ROWS_PER_IMAGE, SIZE, write_diverged_checkpoint, write_images
    ckpt = str(tmp_path / "diverged.ckpt")
    write_diverged_checkpoint(ckpt)
    write_images(str(tmp_path / "shapes"))
    name = str(tmp_path / "diverged")
    run_script("export.py", "--config_path", TINY_CFG, "--ckpt_file", ckpt, "--file_name", name, "--file_format",
               "ONNX", "--batch_size", "1", "--testing_shape", str(SIZE))
    run_script(os.path.join("ascend310_infer", "onnx_for_opencv.py"), "--input", name + ".onnx", "--output",
               name + "_opencv.onnx")
    proc = app(cpp_build, f"--model_path={name}_opencv.onnx", f"--dataset_path={tmp_path / 'shapes' / 'val2017'}",
               f"--image_size={SIZE}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"non-finite rows dropped before NMS: {3 * INF_ROWS_PER_IMAGE}" in proc.stdout
    files = sorted((tmp_path / "result_Files").glob("*.txt"))
    assert len(files) == 3
    for path in files:
        detections = read_result_file(str(path))
        boxes = np.stack([d[2] for d in detections])
        assert np.isfinite(boxes).all() and np.isfinite([d[1] for d in detections]).all()
        assert (boxes >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= 200 + 1e-3).all()


def test_postprocess_leaves_out_nonfinite_lines(shared, tmp_path):
    """Result files the app never writes (an infinity or NaN): left out, counted, strict JSON out."""
    name = json.loads(open(ANN).read())["images"][0]["file_name"]
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / f"{name}.txt").write_text("0 0.9 10 20 30 40\n0 0.8 inf 2 3 4\n1 nan 1 2 3 4\n"
                                                      "2 0.7 -inf 2 inf 4\n")
    proc = run_script("postprocess.py", "--result_files", str(tmp_path / "results"), "--ann_file", ANN,
                      "--output_dir", str(tmp_path / "out"))
    assert "result lines with an infinity or NaN left out: 3" in proc.stdout

    def reject(constant):
        raise ValueError(constant)
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text(), parse_constant=reject)
    assert [p["bbox"] for p in preds] == [[10, 20, 30, 40]]


def test_postprocess_maps_labels_as_the_exported_checkpoint_does(tmp_path):
    """A model of three categories (ids 40, 7, 12 in label order, as train.py saved them) on an annotation file
    holding two of them: each label goes to its category by id; with COCO's default ids the file cannot map."""
    import mindspore as ms
    from src.formats.checkpoint import save_checkpoint
    from src.fileio import write_json
    cats = [{"id": 7, "name": "kite"}, {"id": 12, "name": "sign"}]
    write_json(str(tmp_path / "ann.json"), {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "area": 400,
                         "iscrowd": 0}], "categories": cats})
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.jpg.txt").write_text("1 0.9 10 10 20 20\n2 0.8 50 50 10 10\n0 0.7 1 1 5 5\n")
    ckpt = str(tmp_path / "model.ckpt")
    save_checkpoint({"w": ms.Parameter(ms.Tensor(np.zeros(1, np.float32)), name="w")}, ckpt,
                    {"num_classes": 3, "labels": "kite40\nkite\nsign", "coco_ids": "40,7,12"})
    args = ["--result_files", str(tmp_path / "results"), "--ann_file", str(tmp_path / "ann.json")]
    run_script("postprocess.py", *args, "--output_dir", str(tmp_path / "out"), "--pretrained", ckpt)
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [(p["category_id"], p["score"]) for p in preds] == [(7, 0.9), (12, 0.8)]  # label 0 (id 40): not in it
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["AP50"] == pytest.approx(1.0)
    assert_one_error(run_script("postprocess.py", *args, "--output_dir", str(tmp_path / "coco"), check=False),
                     "category 12 'sign'")


def test_lowering_rejects_non_onnx(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x00garbage")
    proc = run_script(os.path.join("ascend310_infer", "onnx_for_opencv.py"), "--input", str(bad), "--output",
                      str(tmp_path / "y.onnx"), check=False)
    assert_one_error(proc, "is not an ONNX model")
    assert not (tmp_path / "y.onnx").exists()


def test_benchmark_reports_both_timings(cpp_build, tiny_ckpt, shared, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(os.listdir(VAL))[:3]:
        shutil.copy(os.path.join(VAL, name), images)
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, os.path.join(INFER_DIR, "benchmark_cpp.py"), "--config_path", TINY_CFG,
                           "--pretrained", tiny_ckpt, "--image_dir", str(images), "--per_batch_size", "2",
                           "--json", str(out)], env=script_env(cpp_build), capture_output=True, text=True,
                          timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    keys = ("cpp_infer_ms", "cpp_end_to_end_ms", "mindspore_forward_b1_ms", "mindspore_forward_b2_ms")
    assert all(result[k] > 0 for k in keys) and result["cpp_images"] == result["images"] == 3
    assert result["cpp_end_to_end_ms"] >= result["cpp_infer_ms"]
    assert "eval.py model forward, batch 1" in proc.stdout

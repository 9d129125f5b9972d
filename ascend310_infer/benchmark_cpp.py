"""Mean milliseconds per image, measured in one run on the same images and weights:

  the C++ app on CPU (OpenCV DNN, the exported ONNX lowered by onnx_for_opencv.py): graph
      execution, and end to end (read, preprocess, infer, NMS, write), from its time_Result/
  eval.py's model forward (MindSpore, GRAPH_MODE): Detector.forward on the preprocessed images,
      at batch 1 and at per_batch_size (eval.py's batching), after one warm-up batch

    python ascend310_infer/benchmark_cpp.py --config_path configs/yolov3_tiny.yaml \\
        --pretrained yolov3_tiny.ckpt --image_dir ../shared/data/coco_tiny/val2017 [--json out.json]

Options other than the ones below are config keys (testing_shape, letterbox, per_batch_size, ...).
The app is built by build.sh into BUILD_DIR (default ascend310_infer/build) if needed.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

INFER_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(INFER_DIR))
from src.cpu.process import set_up_process  # noqa: E402

set_up_process()  # first: OpenMP reads its spin count when cv2 or MindSpore loads it
import cv2  # noqa: E402
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from model_utils.config import load_config  # noqa: E402
from model_utils.device_adapter import setup_device  # noqa: E402
from onnx_for_opencv import lower_file  # noqa: E402
from src.data.transforms import preprocess  # noqa: E402
from src.engine.detector import (Detector, LiveWeights, build_detection_model, build_with_weights,  # noqa: E402
                                 check_input_size)
from src.formats.checkpoint import network_parameters  # noqa: E402
from src.formats.model_card import ModelCard  # noqa: E402
from src.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from src.fileio import write_json  # noqa: E402
from src.formats.export import export_graph  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # those the app reads


def build_app() -> str:
    build_dir = os.environ.get("BUILD_DIR", os.path.join(INFER_DIR, "build"))
    proc = subprocess.run(["bash", os.path.join(INFER_DIR, "build.sh")], capture_output=True, text=True,
                          env=dict(os.environ, BUILD_DIR=build_dir, PYTHON=os.environ.get("PYTHON", sys.executable)))
    if proc.returncode:
        raise UserError(f"building the C++ app failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return os.path.join(build_dir, "main")


def cpp_ms_per_image(card: ModelCard, model, image_dir: str, folder: str) -> Dict[str, float]:
    """Export (with its card: the app takes the input size and letterbox from it), lower, run the app; its
    graph-only and end-to-end mean ms per image."""
    size = check_input_size(card.input_size)
    onnx_path = export_graph(model, ms.Tensor(np.zeros((1, 3, size, size), np.float32)),
                             os.path.join(folder, "model"), "ONNX", card)
    lowered = os.path.join(folder, "model_opencv.onnx")
    lower_file(onnx_path, lowered)
    proc = subprocess.run([build_app(), f"--model_path={lowered}", f"--dataset_path={image_dir}"],
                          cwd=folder, capture_output=True, text=True)
    if proc.returncode:
        raise UserError(f"the C++ app failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    with open(os.path.join(folder, "time_Result", "test_perform_static.txt"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    return {"cpp_infer_ms": float(lines[0].split("average time: ")[1].split(" ms")[0]),
            "cpp_end_to_end_ms": float(lines[1].split(": ")[1].split(" ms")[0]),
            "cpp_images": int(lines[0].rsplit(" ", 1)[1])}


def read_images(image_dir: str, card: ModelCard) -> List[np.ndarray]:
    """The preprocessed images, as eval.py prepares them for the model (unreadable ones left out)."""
    blobs = []
    for name in sorted(n for n in os.listdir(image_dir) if n.lower().endswith(IMAGE_EXTENSIONS)):
        img = cv2.imread(os.path.join(image_dir, name), cv2.IMREAD_COLOR)
        if img is not None:
            blobs.append(preprocess(img, card.input_size, card.letterbox)[0])
    if not blobs:
        raise UserError(f"no readable images in {image_dir}")
    return blobs


def mindspore_ms_per_image(config, weights: LiveWeights, blobs: List[np.ndarray], batch: int) -> float:
    """Detector.forward over all images in batches of `batch`, after one warm-up batch."""
    detector = Detector(config, weights, batch)
    batches = [np.stack(blobs[i:i + batch]) for i in range(0, len(blobs), batch)]
    detector.forward(batches[0])
    start = time.perf_counter()
    for b in batches:
        detector.forward(b)
    return (time.perf_counter() - start) * 1e3 / len(blobs)


def run(config, image_dir: str) -> Dict:
    if not config.pretrained:
        raise UserError("no weights given: --pretrained CKPT (.ckpt or darknet .weights)")
    if not os.path.isdir(image_dir):
        raise UserError(f"image directory not found: {image_dir}")
    card, network = build_with_weights(config, config.pretrained)  # the weights, read once
    weights = LiveWeights(card, network_parameters(network))
    with tempfile.TemporaryDirectory() as folder:
        results: Dict = cpp_ms_per_image(*build_detection_model(config, weights), image_dir, folder)
    blobs = read_images(image_dir, card)
    results["mindspore_forward_b1_ms"] = mindspore_ms_per_image(config, weights, blobs, 1)
    results[f"mindspore_forward_b{config.per_batch_size}_ms"] = mindspore_ms_per_image(
        config, weights, blobs, config.per_batch_size)
    results = {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}
    results.update(model=card.spec.model_name, shape=card.input_size, letterbox=card.letterbox,
                   images=len(blobs), cores=os.cpu_count())
    return results


def print_table(r: Dict, batch: int) -> None:
    print(f"\n{r['model']} at {r['shape']}, {r['images']} images, {r['cores']} cores: mean ms per image")
    print(f"  C++ app, OpenCV DNN, graph only      {r['cpp_infer_ms']:10.2f}")
    print(f"  C++ app, OpenCV DNN, end to end      {r['cpp_end_to_end_ms']:10.2f}")
    print(f"  eval.py model forward, batch 1       {r['mindspore_forward_b1_ms']:10.2f}")
    print(f"  eval.py model forward, batch {batch:<7d} {r[f'mindspore_forward_b{batch}_ms']:10.2f}")


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                            allow_abbrev=False)
    parser.add_argument("--image_dir", required=True, help="folder of images to time on")
    parser.add_argument("--json", default="", help="write the results here")
    args, rest = parser.parse_known_args()
    config = load_config(rest, description=__doc__)
    setup_device(config)
    results = run(config, args.image_dir)
    if args.json:
        write_json(args.json, results)
    print_table(results, config.per_batch_size)


if __name__ == "__main__":
    run_cli(main)

"""Detect objects in an image, a folder of images, a video or a camera; write annotated copies.

With no arguments: darknet's COCO-trained yolov3-tiny (fetched and converted
once, cached in ~/.cache/yolov3-mindspore) on the images in samples/.

The model: --pretrained (a .ckpt or darknet .weights), or --onnx_file (an
exported ONNX graph, fp32 or int8, in --runtime onnxruntime or openvino); its
model card names the classes and gives the input size and letterbox.

Writes into output_dir one annotated image per input image (a video: an
annotated video with every frame) and detections.json: file, (frame,) bbox
[x, y, w, h] in pixels, score, category_id, category_name.
"""
import os
import sys
from typing import List

from src.cpu.process import set_up_process

set_up_process()  # first: OpenMP reads its spin count when cv2 or MindSpore loads it
import cv2  # noqa: E402
from tqdm import tqdm  # noqa: E402

from model_utils.config import ROOT, load_config  # noqa: E402
from model_utils.device_adapter import setup_device  # noqa: E402
from src.cpu.precision import setup_precision  # noqa: E402
from src.engine.detector import Detections, Detector  # noqa: E402
from src.engine.onnx_runtime import graph_detector  # noqa: E402
from src.engine.precision_timing import measure_speedup  # noqa: E402
from src.engine.visualize import draw_detections  # noqa: E402
from src.errors import UserError, run_cli  # noqa: E402
from src.fileio import atomic_path, temp_path_beside, write_json  # noqa: E402
from src.formats.pretrained import tiny_checkpoint  # noqa: E402
from src.logger import get_logger  # noqa: E402
from src.models.spec import ModelSpec  # noqa: E402

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


class Labels:
    """Class names and category ids of the model's classes."""

    def __init__(self, spec: ModelSpec):
        n = spec.num_classes
        self.names = list(spec.labels) if len(spec.labels) == n else [f"class_{i}" for i in range(n)]
        self.ids = list(spec.coco_ids) if len(spec.coco_ids) == n else list(range(n))

    def records(self, source: str, det: Detections, **extra) -> List[dict]:
        return [dict(file=source, **extra, bbox=[round(float(v), 2) for v in box], score=round(float(s), 4),
                     category_id=int(self.ids[c]), category_name=self.names[c])
                for box, s, c in zip(det.boxes, det.scores, det.labels)]


def list_images(folder: str) -> List[str]:
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS))
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTS)}) in {folder}")
    return [os.path.join(folder, f) for f in files]


def predict_images(detector: Detector, paths: List[str], out_dir: str, labels: Labels, thr: float) -> List[dict]:
    logger = get_logger()
    records: List[dict] = []
    for path in tqdm(paths, desc="predict", disable=not sys.stderr.isatty()):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            logger.warning("skipping unreadable image %s", path)
            continue
        det = detector.detect([img], thr)[0]
        target = os.path.join(out_dir, os.path.basename(path))
        with atomic_path(target, os.path.splitext(path)[1]) as tmp:
            cv2.imwrite(tmp, draw_detections(img, det, labels.names))
        records += labels.records(os.path.basename(path), det)
        logger.info("%s: %d objects", os.path.basename(path), len(det.scores))
    return records


def predict_stream(detector: Detector, source, name: str, target: str, labels: Labels, thr: float) -> List[dict]:
    """Every frame of a video file or camera, annotated into an .mp4 at `target`."""
    cap = cv2.VideoCapture(source)
    ok, frame = cap.read()
    if not ok:
        what = f"camera {source}" if isinstance(source, int) else f"video {source}"
        raise UserError(f"cannot read {what}" + (" (no camera found)" if isinstance(source, int) else ""))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    tmp = temp_path_beside(target, ".mp4")
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0]))
    records: List[dict] = []
    index = 0
    try:
        if not writer.isOpened():
            raise UserError(f"cannot write video {target}: OpenCV's mp4v writer did not open (no such encoder in "
                            f"this OpenCV build, or the folder is not writable)")
        with tqdm(total=total, desc="predict", disable=not sys.stderr.isatty()) as bar:
            while ok:
                det = detector.detect([frame], thr)[0]
                writer.write(draw_detections(frame, det, labels.names))
                records += labels.records(name, det, frame=index)
                index += 1
                bar.update(1)
                ok, frame = cap.read()
        writer.release()
        os.replace(tmp, target)
    finally:
        writer.release()
        cap.release()
        if os.path.exists(tmp):
            os.remove(tmp)
    get_logger().info("%s: %d frames written to %s", name, index, target)
    return records


def check_output_dir(out_dir: str, inputs: List[str]) -> None:
    """Refuse an output_dir where an annotated copy would replace one of the input images."""
    out = os.path.realpath(out_dir)
    for path in inputs:
        if os.path.realpath(os.path.join(out, os.path.basename(path))) == os.path.realpath(path):
            raise UserError(f"output_dir {out_dir} would overwrite the input image {path} with its annotated copy; "
                            f"choose another --output_dir")


def main() -> None:
    demo = len(sys.argv) == 1
    if demo:  # no arguments: darknet's yolov3-tiny on the sample images
        config = load_config(["--config_path", os.path.join(ROOT, "configs", "yolov3_tiny.yaml"),
                              "--input", os.path.join(ROOT, "samples")])
        weights = tiny_checkpoint(config, get_logger().info)
    else:
        config = load_config(description=__doc__)
        weights = config.pretrained
    source = config.input
    if not source:
        raise UserError("give --input IMAGE|DIR|VIDEO|CAMERA_INDEX")
    if config.onnx_file and weights:
        raise UserError("give --onnx_file or --pretrained, not both")
    if config.is_set("runtime") and not config.onnx_file:
        raise UserError("--runtime applies to --onnx_file only")
    if not weights and not config.onnx_file:
        raise UserError("no weights given: --pretrained CKPT (.ckpt or darknet .weights) or --onnx_file M.onnx")
    if not source.isdigit() and not os.path.exists(source):
        raise UserError(f"input not found: {source}")
    is_images = not source.isdigit() and (os.path.isdir(source) or source.lower().endswith(IMAGE_EXTS))
    paths = (list_images(source) if os.path.isdir(source) else [source]) if is_images else []
    check_output_dir(config.output_dir, paths)
    setup_device(config)
    setup_precision(config, get_logger().info,
                    None if config.onnx_file else measure_speedup(config, "infer", 1, config.testing_shape))
    detector = graph_detector(config, get_logger()) if config.onnx_file else Detector(config, weights, 1)
    labels = Labels(detector.spec)
    out_dir = config.output_dir
    os.makedirs(out_dir, exist_ok=True)
    thr = config.score_threshold
    if source.isdigit():
        records = predict_stream(detector, int(source), f"camera{source}",
                                 os.path.join(out_dir, f"camera{source}.mp4"), labels, thr)
    elif is_images:
        records = predict_images(detector, paths, out_dir, labels, thr)
    elif source.lower().endswith(VIDEO_EXTS):
        stem = os.path.splitext(os.path.basename(source))[0]
        records = predict_stream(detector, source, os.path.basename(source),
                                 os.path.join(out_dir, f"{stem}_det.mp4"), labels, thr)
    else:
        raise UserError(f"unsupported input {source}: expected an image ({', '.join(IMAGE_EXTS)}), "
                        f"a video ({', '.join(VIDEO_EXTS)}), a folder or a camera index")
    detector.log_nonfinite()
    write_json(os.path.join(out_dir, "detections.json"), records)
    get_logger().info("%d detections written to %s", len(records), os.path.join(out_dir, "detections.json"))


if __name__ == "__main__":
    run_cli(main)

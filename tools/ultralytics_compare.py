"""This package's yolov3-tiny against ultralytics' YOLOv3-tiny, both trained from scratch on the same set, in one run.

The set is the COCO layout train.py reads (DATA_DIR/annotations/instances_{train,val}2017.json, train2017/,
val2017/); the script writes the same images and boxes in ultralytics' YOLO layout (symlinks and label files). The
package trains with train.py (--config_path, from scratch: the recipe the start picks) and is scored by eval.py; then
ultralytics trains its YOLOv3-tiny from its yaml (the anchor-free head of ultralytics 8) with its own defaults for
the same epochs, size and batch, and its last weights detect the val images (its val settings: conf 0.001, NMS IoU
0.7). Both sides' detections are scored by the same COCO evaluator (the package's, faster-coco-eval) on the same
annotation file. ultralytics is not a dependency of the package: its side runs in a venv of its own (--venv, made on
first use: torch and torchvision's CPU wheels from download.pytorch.org, else PyPI's, then ultralytics from PyPI).

    python tools/ultralytics_compare.py --data_dir data/raccoon --output_dir outputs/ultralytics_compare \\
        [--config_path configs/yolov3_tiny.yaml --epochs 20 --imgsz 416 --batch 16] [-- more train.py options]

Prints one table (AP, AP50, AP75 on the val images; training wall time) and writes OUTPUT_DIR/results.json.
"""
import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from src.fileio import write_json  # noqa: E402 (plain Python: the ultralytics venv imports it too)
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
VAL_CONF, VAL_IOU, VAL_MAX_DET = 0.001, 0.7, 300  # ultralytics' validator settings


# ---- ultralytics side (runs in its venv) ----

def ultralytics_worker(args) -> None:
    """Train YOLOv3-tiny from its yaml, detect the val images with the last weights; JSON on stdout's last line."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import ultralytics
    from ultralytics import YOLO
    model = YOLO("yolov3-tiny.yaml")
    start = time.time()
    model.train(data=os.path.join(args.output_dir, "yolo_data", "data.yaml"), epochs=args.epochs, imgsz=args.imgsz,
                batch=args.batch, device="cpu", workers=2, seed=args.seed, deterministic=True, pretrained=False,
                plots=False, val=False, amp=False, project=os.path.join(args.output_dir, "ultralytics"),
                name="train", exist_ok=True)
    seconds = time.time() - start
    own = {k: float(v) for k, v in (model.trainer.metrics or {}).items() if k.startswith("metrics/mAP")}
    val_dir = os.path.join(args.output_dir, "yolo_data", "images", "val")
    detections = []
    for name in sorted(os.listdir(val_dir)):
        result = model.predict(os.path.join(val_dir, name), imgsz=args.imgsz, conf=VAL_CONF, iou=VAL_IOU,
                               max_det=VAL_MAX_DET, device="cpu", verbose=False)[0]
        boxes = result.boxes
        for xyxy, score, label in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist()):
            detections.append({"image": os.path.splitext(name)[0], "label": int(label), "score": score,
                               "bbox": [xyxy[0], xyxy[1], xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]]})
    from ultralytics.utils.torch_utils import get_flops
    print(json.dumps({"ultralytics": ultralytics.__version__, "train_seconds": seconds, "detections": detections,
                      "own_metrics": own, "parameters": sum(p.numel() for p in model.model.parameters()),
                      "gflops": get_flops(model.model, args.imgsz)}))


def ultralytics_python(venv: str) -> str:
    """The venv's python, with ultralytics installed on first use."""
    exe = os.path.join(venv, "bin", "python")
    if os.path.exists(exe) and subprocess.run([exe, "-c", "import ultralytics"], capture_output=True).returncode == 0:
        return exe
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [exe, "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch", "torchvision", "--index-url", TORCH_INDEX], timeout=1800)  # else PyPI's, below
    subprocess.run(pip + ["ultralytics"], check=True, timeout=3600)
    return exe


# ---- the package's side (the project's venv) ----

def label_order(categories: List[dict]) -> List[dict]:
    """A COCO file's categories in ultralytics' label order (0, 1, ...): by category id."""
    return sorted(categories, key=lambda c: c["id"])


def write_yolo_layout(data_dir: str, out: str) -> List[str]:
    """DATA_DIR's COCO layout as ultralytics' YOLO layout under OUT (image files as symlinks named by image id);
    returns the class names in label order (the file's categories by id)."""
    names: List[str] = []
    for split in ("train", "val"):
        with open(os.path.join(data_dir, "annotations", f"instances_{split}2017.json"), encoding="utf-8") as f:
            coco = json.load(f)
        cats = label_order(coco["categories"])
        if names and names != [c["name"] for c in cats]:
            raise SystemExit("error: the train and val annotation files list different categories")
        names = [c["name"] for c in cats]
        label = {c["id"]: k for k, c in enumerate(cats)}
        images, labels = (os.path.join(out, kind, split) for kind in ("images", "labels"))
        os.makedirs(images, exist_ok=True)
        os.makedirs(labels, exist_ok=True)
        rows: Dict[int, List[str]] = {img["id"]: [] for img in coco["images"]}
        sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}
        for a in coco["annotations"]:
            if a.get("iscrowd", 0):
                continue
            (x, y, w, h), (iw, ih) = a["bbox"], sizes[a["image_id"]]
            rows[a["image_id"]].append(f"{label[a['category_id']]} {(x + w / 2) / iw:.6f} {(y + h / 2) / ih:.6f} "
                                       f"{w / iw:.6f} {h / ih:.6f}")
        for img in coco["images"]:
            link = os.path.join(images, f"{img['id']}{os.path.splitext(img['file_name'])[1]}")
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(os.path.join(data_dir, f"{split}2017", img["file_name"])), link)
            with open(os.path.join(labels, f"{img['id']}.txt"), "w", encoding="utf-8") as f:
                f.write("".join(r + "\n" for r in rows[img["id"]]))
    with open(os.path.join(out, "data.yaml"), "w", encoding="utf-8") as f:
        f.write(f"path: {os.path.abspath(out)}\ntrain: images/train\nval: images/val\nnames:\n")
        f.write("".join(f"  {k}: {json.dumps(n)}\n" for k, n in enumerate(names)))
    return names


def run_logged(argv: List[str], log: str) -> float:
    """Run a package script from the repository root, output to `log`; its wall time in seconds."""
    start = time.time()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"error: {argv[0]} failed (exit {proc.returncode}); see {log}")
    return time.time() - start


def package_side(args, extra: List[str]) -> Dict[str, float]:
    out = os.path.join(args.output_dir, "package")
    seconds = run_logged(["train.py", "--config_path", args.config_path, "--data_dir", args.data_dir,
                          "--training_shape", str(args.imgsz), "--max_epoch", str(args.epochs), "--per_batch_size",
                          str(args.batch), "--ckpt_path", out, "--device_target", "CPU", *extra], out + "_train.log")
    from src.engine.run_checkpoints import list_checkpoints  # MindSpore: the project's venv only
    last = list_checkpoints(os.path.join(out, "ckpt_0"))[-1][1]
    run_logged(["eval.py", "--config_path", args.config_path, "--data_dir", args.data_dir, "--pretrained", last,
                "--testing_shape", str(args.imgsz), "--device_target", "CPU", "--eval_dir", os.path.join(out, "eval")],
               out + "_eval.log")
    with open(os.path.join(out, "eval", "stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    return {"AP": stats["AP"], "AP50": stats["AP50"], "AP75": stats["AP75"], "train_seconds": seconds}


def score_ultralytics(args, found: dict) -> Dict[str, float]:
    """The ultralytics detections scored as eval.py scores the package's."""
    from src.data.coco import evaluate, load_coco
    ann = os.path.join(args.data_dir, "annotations", "instances_val2017.json")
    coco = load_coco(ann)
    category = {k: c["id"] for k, c in enumerate(label_order(coco.dataset["categories"]))}
    results = [{"image_id": int(d["image"]), "category_id": category[d["label"]], "bbox": d["bbox"],
                "score": d["score"]} for d in found["detections"]]
    stats, _, _ = evaluate(coco, results)
    return {"AP": stats["AP"], "AP50": stats["AP50"], "AP75": stats["AP75"], "train_seconds": found["train_seconds"]}


def ultralytics_side(args) -> dict:
    """The ultralytics run's result: trained in its venv once per output dir and settings (its code does not change
    with the package's; delete OUTPUT_DIR/ultralytics_result.json to train it again). Runs on one folder at once
    train it once."""
    settings = {"data_dir": args.data_dir, "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch,
                "seed": args.seed}
    kept = os.path.join(args.output_dir, "ultralytics_result.json")
    with open(os.path.join(args.output_dir, "ultralytics.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run on this folder may be training it: wait for its result
        if os.path.isfile(kept):
            with open(kept, encoding="utf-8") as f:
                found = json.load(f)
            if found.get("settings") == settings:
                print(f"ultralytics side: the run kept in {kept} (same settings)")
                return found
        return train_ultralytics(args, settings, kept)


def train_ultralytics(args, settings: dict, kept: str) -> dict:
    python = ultralytics_python(args.venv)
    log = os.path.join(args.output_dir, "ultralytics.log")
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run([python, os.path.abspath(__file__), "--worker", "--data_dir", args.data_dir,
                               "--output_dir", args.output_dir, "--epochs", str(args.epochs), "--imgsz",
                               str(args.imgsz), "--batch", str(args.batch), "--seed", str(args.seed)],
                              stdout=subprocess.PIPE, stderr=f, text=True)
        f.write(proc.stdout)
    if proc.returncode:
        raise SystemExit(f"error: the ultralytics side failed (exit {proc.returncode}); see {log}")
    found = dict(json.loads(proc.stdout.strip().splitlines()[-1]), settings=settings, load=os.getloadavg()[0])
    write_json(kept, found)
    return found


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="a COCO-layout set (train.py's --data_dir)")
    parser.add_argument("--output_dir", default="outputs/ultralytics_compare")
    parser.add_argument("--config_path", default="configs/yolov3_tiny.yaml", help="the package's model config")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--imgsz", type=int, default=416, help="training and testing size of both sides")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="ultralytics' seed")
    parser.add_argument("--venv", default="/tmp/ultralyticsvenv", help="ultralytics' venv (made if missing)")
    parser.add_argument("--skip_package", action="store_true", help="train ultralytics only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.data_dir, args.output_dir = os.path.abspath(args.data_dir), os.path.abspath(args.output_dir)
    if args.worker:
        ultralytics_worker(args)
        return
    for split in ("train", "val"):
        if not os.path.isfile(os.path.join(args.data_dir, "annotations", f"instances_{split}2017.json")):
            raise SystemExit(f"error: {args.data_dir} holds no annotations/instances_{split}2017.json")
    os.makedirs(args.output_dir, exist_ok=True)
    write_yolo_layout(args.data_dir, os.path.join(args.output_dir, "yolo_data"))
    rows: Dict[str, Dict[str, float]] = {}
    if not args.skip_package:
        rows["this package"] = package_side(args, extra)
        rows["this package"]["load"] = os.getloadavg()[0]
    found = ultralytics_side(args)
    name = f"ultralytics {found['ultralytics']} YOLOv3-tiny"
    rows[name] = score_ultralytics(args, found)
    rows[name]["load"] = found["load"]
    print(f"\n{os.path.basename(args.data_dir)} from scratch: {args.epochs} epochs at {args.imgsz}, batch "
          f"{args.batch}; val AP by the package's COCO evaluator; load: the load average when training ended")
    print(f"{'':34}{'AP':>8}{'AP50':>8}{'AP75':>8}{'train s':>10}{'load':>7}")
    for row, r in rows.items():
        print(f"{row:34}{r['AP']:8.3f}{r['AP50']:8.3f}{r['AP75']:8.3f}{r['train_seconds']:10.0f}{r['load']:7.1f}")
    print(f"ultralytics' own validator on the same weights: {found['own_metrics']}; its model "
          f"{found['gflops']:.1f} GFLOPs at {args.imgsz}, {found['parameters'] / 1e6:.1f} M parameters")
    write_json(os.path.join(args.output_dir, "results.json"),
               {"rows": rows, "ultralytics": found["ultralytics"], "ultralytics_own_metrics": found["own_metrics"],
                "ultralytics_parameters": found["parameters"],
                "ultralytics_gflops_at_imgsz": found["gflops"], "extra": extra})


if __name__ == "__main__":
    main()

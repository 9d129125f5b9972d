"""The commands of README.md and docs/usage.md (their fenced `bash` blocks) as a user types them, run in order in a
fresh copy of the repository (no ../shared beside it) from its root, with only the placeholders (/path/to/coco,
DS/, VOC/, ...) replaced by small data sets made here; conftest's `readme_runs` runs them once a session for
tests/test_readme.py (exit codes, the files each writes) and the tests of what a command writes
(tests/test_benchmark.py)."""
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Dict, List, NamedTuple

from conftest import REPO

DOCS = ["README.md", "docs/usage.md"]
BIN = os.path.dirname(sys.executable)
NOT_RUN = {  # command (its first words) -> why this test cannot run it
    "pip install -r requirements-dev.txt && python -m pytest tests -q": "it is this test suite (CI runs it: .ci/run)",
    "NODE_NUM=2 NODE_RANK=0": "needs 2 nodes with 8 GPUs each",
    "NODE_NUM=2 NODE_RANK=1": "needs 2 nodes with 8 GPUs each",
}
OPTIONAL = re.compile(r"\s*\[[^\]]*\]")  # "[--letterbox True|False]": an option the user may add; left out


def commands(doc: str) -> List[str]:
    """The commands of a document's fenced bash blocks: one a line, continuation lines joined, comments dropped."""
    text = open(os.path.join(REPO, doc), encoding="utf-8").read()
    found = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                found.append(" ".join(line.split()))
    return found


def all_commands() -> List[str]:
    """README's, then docs/usage.md's not already in it, in order."""
    seen: List[str] = []
    for command in (c for doc in DOCS for c in commands(doc)):
        if command not in seen:
            seen.append(command)
    return seen


def skipped(command: str) -> str:
    return next((why for start, why in NOT_RUN.items() if command.startswith(start)), "")


def options(argv: List[str]) -> Dict[str, str]:
    return {a[2:]: b for a, b in zip(argv, argv[1:]) if a.startswith("--")}


def written(command: str) -> List[str]:
    """The files the README says a command writes, from its script and options (relative to the clone)."""
    argv = shlex.split(command.split("&&")[-1])
    opt = options(argv)
    script = argv[2] if argv[:2] == ["python", "-m"] else argv[1] if argv[0] == "python" else argv[1]
    if script == "predict.py":
        return [os.path.join(opt.get("output_dir", "outputs/predict"), "detections.json")]
    if script == "convert_weight.py":
        return [opt["output_file"]]
    if script == "eval.py":
        return [os.path.join(opt.get("eval_dir", "outputs/eval"), f) for f in ("stats.json", "predictions.json")]
    if script == "train.py":
        return [os.path.join(opt["ckpt_path"], "ckpt_0", "best.ckpt" if opt.get("run_eval") == "True"
                             else f"0-{opt['max_epoch']}_{opt['max_epoch']}.ckpt")]
    if script == "export.py":
        return [f"{opt['file_name']}.{opt.get('file_format', 'MINDIR').lower()}"]
    if script == "benchmark.py":
        return [opt["json"]]
    if script == "src.data.convert_labels":
        splits = [opt["split"]] if "split" in opt else ["train", "val"]
        return [os.path.join(opt["output_dir"], "annotations", f"instances_{s}2017.json") for s in splits]
    if script == "src.data.anchors":
        return [opt["save_config"]] if "save_config" in opt else []
    if script == "scripts/run_infer_cpp.sh":
        return ["predictions.json", "stats.json", "acc.log"]
    return []


def write_yolo_export(coco: str, root: str) -> str:
    """An ultralytics-style export (images/, labels/, data.yaml) of a COCO-layout set: DS/."""
    names = []
    for split in ("train", "val"):
        ann = json.load(open(os.path.join(coco, "annotations", f"instances_{split}2017.json")))
        names = [c["name"] for c in sorted(ann["categories"], key=lambda c: c["id"])]
        ids = [c["id"] for c in sorted(ann["categories"], key=lambda c: c["id"])]
        os.makedirs(os.path.join(root, "images", split))
        os.makedirs(os.path.join(root, "labels", split))
        for image in ann["images"]:
            os.link(os.path.join(coco, f"{split}2017", image["file_name"]),
                    os.path.join(root, "images", split, image["file_name"]))
            w, h = image["width"], image["height"]
            lines = [f"{ids.index(a['category_id'])} {(a['bbox'][0] + a['bbox'][2] / 2) / w:.6f} "
                     f"{(a['bbox'][1] + a['bbox'][3] / 2) / h:.6f} {a['bbox'][2] / w:.6f} {a['bbox'][3] / h:.6f}"
                     for a in ann["annotations"] if a["image_id"] == image["id"]]
            with open(os.path.join(root, "labels", split, os.path.splitext(image["file_name"])[0] + ".txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
    with open(os.path.join(root, "data.yaml"), "w") as f:
        f.write(f"path: .\ntrain: images/train\nval: images/val\nnames: {json.dumps(names)}\n")
    return root


def write_voc_export(coco: str, root: str) -> str:
    """Pascal VOC folders, one per split (SPLIT/JPEGImages, SPLIT/Annotations), and names.txt: VOC/."""
    for split in ("train", "val"):
        ann = json.load(open(os.path.join(coco, "annotations", f"instances_{split}2017.json")))
        names = {c["id"]: c["name"] for c in ann["categories"]}
        os.makedirs(os.path.join(root, split, "JPEGImages"))
        os.makedirs(os.path.join(root, split, "Annotations"))
        for image in ann["images"]:
            os.link(os.path.join(coco, f"{split}2017", image["file_name"]),
                    os.path.join(root, split, "JPEGImages", image["file_name"]))
            objects = "".join(
                f"<object><name>{names[a['category_id']]}</name><bndbox><xmin>{round(a['bbox'][0]) + 1}</xmin>"
                f"<ymin>{round(a['bbox'][1]) + 1}</ymin><xmax>{round(a['bbox'][0] + a['bbox'][2])}</xmax>"
                f"<ymax>{round(a['bbox'][1] + a['bbox'][3])}</ymax></bndbox></object>"
                for a in ann["annotations"] if a["image_id"] == image["id"])
            with open(os.path.join(root, split, "Annotations", os.path.splitext(image["file_name"])[0] + ".xml"),
                      "w") as f:
                f.write(f"<annotation><filename>{image['file_name']}</filename>{objects}</annotation>")
    with open(os.path.join(root, "names.txt"), "w") as f:
        f.write("\n".join(names[k] for k in sorted(names)) + "\n")
    return root


def placeholders(folder: str, weights: str) -> Dict[str, str]:
    """What each placeholder stands for, made in `folder`: a 16 + 8 image COCO-layout set (one batch of the
    README's 16), its YOLO and VOC exports; darknet's yolov3-tiny.weights (`weights`)."""
    from src.data.synthetic import make_dataset
    coco = os.path.join(folder, "coco")
    make_dataset(coco, 16, 8, size=160, min_size=24, max_size=80)
    voc = write_voc_export(coco, os.path.join(folder, "voc"))
    return {"/path/to/coco": coco, "/path/to/images": os.path.join(coco, "val2017"),
            "IMAGE|DIR|VIDEO|CAMERA_INDEX": "samples", "DS/": write_yolo_export(coco, os.path.join(folder, "ds")) + "/",
            "VOC/": voc + "/", "names.txt": os.path.join(voc, "names.txt"), "yolov3-tiny.weights": weights}


def as_typed(command: str, values: Dict[str, str]) -> str:
    command = OPTIONAL.sub("", command)
    for placeholder, value in values.items():
        command = re.sub(rf"(?<![\w/.-]){re.escape(placeholder)}", value, command)
    return command


class Run(NamedTuple):
    typed: str  # the command as run
    proc: subprocess.CompletedProcess
    started: float  # time.time() before it ran, less a second (file times' resolution)


def run_all(clone: str, values: Dict[str, str]) -> Dict[str, Run]:
    """Each command not in NOT_RUN, in order, in `clone`: command -> its Run."""
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), PYTHON=sys.executable)
    runs = {}
    for command in all_commands():
        if skipped(command):
            continue
        typed = as_typed(command, values)
        started = time.time() - 1
        runs[command] = Run(typed, subprocess.run(["bash", "-c", typed], cwd=clone, env=env, capture_output=True,
                                                  text=True, timeout=1800), started)
    return runs



"""Pascal VOC XML or YOLO txt labels -> the COCO layout train.py and eval.py read.

    python -m src.data.convert_labels --format voc --images VOC2007/JPEGImages --labels VOC2007/Annotations \\
        --output_dir data/voc --split train [--classes voc_names.txt]
    python -m src.data.convert_labels --format yolo --images ds/images/train --labels ds/labels/train \\
        --output_dir data/ds --split train [--classes ds/classes.txt | ds/data.yaml]
    python -m src.data.convert_labels --data ds/data.yaml --output_dir data/ds

writes OUTPUT_DIR/annotations/instances_SPLIT2017.json and puts the images in
OUTPUT_DIR/SPLIT2017/ (hard links where the file system allows, else copies;
when --images already is that folder they stay where they are).
Every label file is checked before anything is written; the first bad one is
an error naming it.

VOC: one XML per image (its <filename> in --images, else the image named like
the XML; images without an XML are left out); pixel coordinates are 1-based
and inclusive, so COCO x = xmin - 1 and w = xmax - xmin + 1; image sizes from
<size>, else from the image; `difficult` objects become iscrowd boxes
(training skips them, COCO eval ignores them).
Category ids 1..N follow --classes (one name a line) or else the sorted names
found: give the same --classes file for every split.
YOLO: in LABELS/STEM.txt for each image of --images (no file: an image
without boxes), one line per object, normalised to 0..1: a box `class cx cy w h`,
or a polygon `class x1 y1 x2 y2 x3 y3 ...` (ultralytics' and Roboflow's
segmentation labels), which becomes its bounding box. Keypoint labels
(`class cx cy w h` and the points) become their boxes when the data YAML gives
`kpt_shape`; without it their lines are an error. Class k is category id k + 1
with the k-th name of --classes: one name a line, or an ultralytics data YAML
(`names:` a list or an {index: name} map); default LABELS/classes.txt. Image
sizes from the images.
--data DATA.yaml (ultralytics' data set file: `path`, default the YAML's folder,
then `train` and `val` image folders relative to it, labels in the folder named
like each with `images` -> `labels`, and `names`) converts both splits at once.
Boxes are clipped to their image; boxes left without area are dropped and counted.
"""
import argparse
import math
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import yaml

from src.errors import ArgumentParser, UserError, run_cli
from src.fileio import write_json

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
YAML_EXTS = (".yaml", ".yml")
SPLITS = ("train", "val")


@dataclass
class Box:
    name: str
    x1: float
    y1: float
    x2: float
    y2: float
    crowd: bool = False


@dataclass
class LabelledImage:
    """One image and its boxes (pixel x1, y1, x2, y2, not yet clipped)."""
    image: str
    label_file: str
    width: int = 0
    height: int = 0
    boxes: List[Box] = field(default_factory=list)


def read_classes(path: str) -> List[str]:
    """Class names: an ultralytics data YAML's `names`, or one name a line (blank lines at the end allowed);
    duplicates and blank names are errors."""
    if not os.path.isfile(path):
        raise UserError(f"class list not found: {path}")
    if path.lower().endswith(YAML_EXTS):
        return yaml_names(read_yaml(path), path)
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f.read().rstrip().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the class names ({e})") from None
    if not names or not all(names):
        raise UserError(f"{path}: needs one non-blank class name a line")
    return _unique(names, path)


def _unique(names: List[str], path: str) -> List[str]:
    seen = set()
    for name in names:
        if name in seen:
            raise UserError(f"{path}: class '{name}' is listed twice")
        seen.add(name)
    return names


def read_yaml(path: str) -> dict:
    """A YAML file holding a mapping."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: cannot read it as YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a YAML mapping (an ultralytics data set file)")
    return data


def yaml_names(data: dict, path: str) -> List[str]:
    """`names` of an ultralytics data YAML: a list, or a map from every index 0..N-1 to a name."""
    names = data.get("names")
    if isinstance(names, dict):
        names = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in names.items()}
        if set(names) != set(range(len(names))):
            raise UserError(f"{path}: 'names' must map each index 0..{len(names) - 1} to a name, got the keys "
                            f"{', '.join(str(k) for k in names)}")
        names = [names[k] for k in range(len(names))]
    if not isinstance(names, list) or not names:
        raise UserError(f"{path}: needs 'names', a list of class names or an {{index: name}} map")
    names = [str(x).strip() if x is not None else "" for x in names]
    if not all(names):
        raise UserError(f"{path}: 'names' has a blank class name")
    return _unique(names, path)


def image_size(path: str) -> Tuple[int, int]:
    """(width, height) as training sees the image (cv2, EXIF orientation applied)."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"{path}: not a readable image")
    return img.shape[1], img.shape[0]


def list_images(folder: str) -> Dict[str, str]:
    """Image file name -> path for the images directly in `folder`."""
    if not os.path.isdir(folder):
        raise UserError(f"image directory not found: {folder}")
    return {n: os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if n.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(folder, n))}


def _text(node: Optional[ET.Element], tag: str) -> str:
    child = node.find(tag) if node is not None else None
    return (child.text or "").strip() if child is not None else ""


def read_voc_file(xml_path: str, images: Dict[str, str]) -> LabelledImage:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise UserError(f"{xml_path}: not valid XML ({e})") from None
    except OSError as e:
        raise UserError(f"{xml_path}: cannot read it ({e.strerror})") from None
    filename = os.path.basename(_text(root, "filename"))
    if filename not in images:
        stem = os.path.splitext(os.path.basename(xml_path))[0]
        filename = next((n for n in images if os.path.splitext(n)[0] == stem), "")
    if not filename:
        raise UserError(f"{xml_path}: its image {_text(root, 'filename') or '(no <filename>)'} "
                        f"is not in the image directory")
    item = LabelledImage(images[filename], xml_path)
    size = root.find("size")
    try:
        item.width, item.height = int(float(_text(size, "width") or 0)), int(float(_text(size, "height") or 0))
    except ValueError:
        raise UserError(f"{xml_path}: <size> width and height must be numbers") from None
    for k, obj in enumerate(root.iter("object")):
        name = _text(obj, "name")
        if not name:
            raise UserError(f"{xml_path}: object {k + 1} has no <name>")
        bnd = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(_text(bnd, t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise UserError(f"{xml_path}: object {k + 1} ({name}) needs numeric bndbox xmin, ymin, xmax, "
                            "ymax") from None
        if xmax < xmin or ymax < ymin:
            raise UserError(f"{xml_path}: object {k + 1} ({name}) has xmax < xmin or ymax < ymin")
        difficult = _text(obj, "difficult") in ("1", "true")
        item.boxes.append(Box(name, xmin - 1, ymin - 1, xmax, ymax, difficult))
    return item


def read_voc(image_dir: str, label_dir: str, classes_file: str) -> Tuple[List[LabelledImage], List[str]]:
    images = list_images(image_dir)
    if not os.path.isdir(label_dir):
        raise UserError(f"label directory not found: {label_dir}")
    files = sorted(n for n in os.listdir(label_dir) if n.lower().endswith(".xml"))
    if not files:
        raise UserError(f"no .xml files in {label_dir}")
    items = [read_voc_file(os.path.join(label_dir, n), images) for n in files]
    if classes_file:
        names = read_classes(classes_file)
        known = set(names)
        for item in items:
            for box in item.boxes:
                if box.name not in known:
                    raise UserError(f"{item.label_file}: class '{box.name}' is not in {classes_file}")
    else:
        names = sorted({box.name for item in items for box in item.boxes})
    return items, names


def _yolo_number(text: str, label_file: str, line_no: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{label_file}: line {line_no}: '{text}' is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{label_file}: line {line_no}: '{text}' is not a finite number")
    return value


def yolo_box(values: List[float], label_file: str, line_no: int,
             keypoint_columns: int) -> Tuple[float, float, float, float]:
    """The normalised (x1, y1, x2, y2) of one object line's numbers (the class first): a box, a polygon's
    bounding box, or (keypoint_columns > 0: lines of that many columns) a keypoint line's box."""
    n, values = len(values), values[1:]
    if n == 5 or n == keypoint_columns:
        cx, cy, w, h = values[:4]
        if not all(0.0 <= v <= 1.0 for v in values[:4]):
            raise UserError(f"{label_file}: line {line_no}: cx cy w h must be normalised to 0..1")
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if n >= 7 and n % 2 == 1:
        if not all(0.0 <= v <= 1.0 for v in values):
            raise UserError(f"{label_file}: line {line_no}: polygon points must be normalised to 0..1")
        xs, ys = values[0::2], values[1::2]
        return min(xs), min(ys), max(xs), max(ys)
    keypoints = (f" or {keypoint_columns} (keypoints)" if keypoint_columns
                 else "; keypoint labels need the data YAML's kpt_shape (--data)")
    raise UserError(f"{label_file}: line {line_no}: expected 5 columns (class cx cy w h) or a polygon (class x1 y1 "
                    f"x2 y2 x3 y3 ...: an odd count from 7){keypoints}, got {n}")


def read_yolo_file(label_file: str, names: Sequence[str], classes_file: str,
                   keypoint_columns: int = 0) -> List[Tuple[int, float, float, float, float]]:
    """The (class, x1, y1, x2, y2) rows of one label file, normalised and checked (see yolo_box)."""
    try:
        with open(label_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{label_file}: cannot read it as text ({e})") from None
    rows = []
    for line_no, line in enumerate(lines, 1):
        cols = line.split()
        if not cols:
            continue
        values = [_yolo_number(c, label_file, line_no) for c in cols]
        box = yolo_box(values, label_file, line_no, keypoint_columns)
        cls = values[0]
        if not cls.is_integer() or not 0 <= cls < len(names):
            raise UserError(f"{label_file}: line {line_no}: class {cols[0]} is not an index 0..{len(names) - 1} "
                            f"of {classes_file}")
        rows.append((int(cls), *box))
    return rows


def read_yolo(image_dir: str, label_dir: str, classes_file: str, names: Optional[List[str]] = None,
              keypoint_columns: int = 0) -> Tuple[List[LabelledImage], List[str]]:
    """Every image of image_dir with its boxes; the class names from `names` or else classes_file
    (default LABELS/classes.txt)."""
    images = list_images(image_dir)
    if not os.path.isdir(label_dir):
        raise UserError(f"label directory not found: {label_dir}")
    classes_file = classes_file or os.path.join(label_dir, "classes.txt")
    names = names or read_classes(classes_file)
    stems: Dict[str, str] = {}
    for name in images:
        stem = os.path.splitext(name)[0]
        if stem in stems:
            raise UserError(f"{image_dir}: images {stems[stem]} and {name} would share the label file {stem}.txt")
        stems[stem] = name
    label_files = sorted(n for n in os.listdir(label_dir) if n.endswith(".txt")
                         and os.path.abspath(os.path.join(label_dir, n)) != os.path.abspath(classes_file))
    for n in label_files:
        if n[:-4] not in stems:
            raise UserError(f"{os.path.join(label_dir, n)}: no image {n[:-4]}.* in {image_dir}")
    if not label_files:
        raise UserError(f"no .txt label files in {label_dir}")
    items = []
    for stem, name in stems.items():
        label_file = os.path.join(label_dir, stem + ".txt")
        rows = read_yolo_file(label_file, names, classes_file, keypoint_columns) \
            if os.path.isfile(label_file) else []
        item = LabelledImage(images[name], label_file)
        item.width, item.height = image_size(item.image)
        for cls, x1, y1, x2, y2 in rows:
            item.boxes.append(Box(names[cls], x1 * item.width, y1 * item.height, x2 * item.width, y2 * item.height))
        items.append(item)
    return items, names


def to_coco(items: List[LabelledImage], names: Sequence[str]) -> Tuple[Dict, Dict[str, int]]:
    """The COCO dict (images in the given order, ids from 1) and counts of clipped and dropped boxes."""
    cat_id = {n: k + 1 for k, n in enumerate(names)}
    images, annotations = [], []
    counts = {"clipped": 0, "dropped": 0}
    seen: Dict[str, str] = {}
    for item in items:
        file_name = os.path.basename(item.image)
        if file_name in seen:
            raise UserError(f"{item.label_file} and {seen[file_name]} both label the image {file_name}")
        seen[file_name] = item.label_file
        if item.width <= 0 or item.height <= 0:
            item.width, item.height = image_size(item.image)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "width": item.width, "height": item.height})
        for b in item.boxes:
            x1, x2 = min(max(b.x1, 0.0), item.width), min(max(b.x2, 0.0), item.width)
            y1, y2 = min(max(b.y1, 0.0), item.height), min(max(b.y2, 0.0), item.height)
            if (x1, y1, x2, y2) != (b.x1, b.y1, b.x2, b.y2):
                counts["clipped"] += 1
            if x2 <= x1 or y2 <= y1:
                counts["dropped"] += 1
                continue
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id[b.name],
                                "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)],
                                "area": round(w * h, 2), "iscrowd": int(b.crowd)})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": cat_id[n], "name": n} for n in names]}
    return coco, counts


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def place_images(sources: Sequence[str], image_dir: str) -> None:
    """Fill the new folder image_dir with the source images, all or nothing (hard links, else copies)."""
    parent = os.path.dirname(image_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(image_dir)}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        for src in sources:
            dst = os.path.join(tmp, os.path.basename(src))
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
        if os.path.isdir(image_dir):
            os.rmdir(image_dir)
        os.replace(tmp, image_dir)
    except OSError as e:
        raise UserError(f"cannot write the images to {image_dir}: {e}") from None
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)


@dataclass
class Split:
    """One split to convert: where its images and labels are and where they go."""
    name: str
    image_dir: str
    label_dir: str
    output_dir: str

    @property
    def out_images(self) -> str:
        return os.path.join(self.output_dir, f"{self.name}2017")

    @property
    def ann_file(self) -> str:
        return os.path.join(self.output_dir, "annotations", f"instances_{self.name}2017.json")

    def in_place(self) -> bool:
        return os.path.isdir(self.out_images) and os.path.isdir(self.image_dir) and \
            os.path.samefile(self.out_images, self.image_dir)

    def check_output(self) -> None:
        if os.path.exists(self.ann_file):
            raise UserError(f"{self.ann_file} already exists; remove it or choose another --output_dir")
        out = self.out_images
        if os.path.exists(out) and not self.in_place() and (not os.path.isdir(out) or os.listdir(out)):
            raise UserError(f"{out} already exists; remove it or choose another --output_dir")


def write_split(split: Split, items: List[LabelledImage], names: Sequence[str]) -> Tuple[Dict, Dict[str, int]]:
    """Write the split's images and annotation file; returns (coco, counts)."""
    coco, counts = to_coco(items, names)
    in_place = split.in_place()
    if not in_place:
        place_images([item.image for item in items], split.out_images)
    try:
        write_json(split.ann_file, coco)
    except OSError as e:
        if not in_place:
            shutil.rmtree(split.out_images, ignore_errors=True)
        raise UserError(f"cannot write {split.ann_file}: {e}") from None
    return coco, counts


def convert(fmt: str, image_dir: str, label_dir: str, output_dir: str, split: str,
            classes_file: str = "") -> Tuple[Dict, Dict[str, int]]:
    """Read and check every label, then write the split's images and annotation file; returns (coco, counts)."""
    target = Split(split, image_dir, label_dir, output_dir)
    target.check_output()
    items, names = {"voc": read_voc, "yolo": read_yolo}[fmt](image_dir, label_dir, classes_file)
    if not names:
        raise UserError(f"no objects in the labels of {label_dir}, so no classes (give --classes)")
    return write_split(target, items, names)


def _data_folder(root: str, entry, key: str, path: str) -> str:
    """An image folder of the data YAML (as ultralytics resolves it: under `path`, a leading ../ dropped
    when the folder is not there, as in Roboflow's exports)."""
    if not isinstance(entry, str) or not entry:
        raise UserError(f"{path}: '{key}' must be one image folder, got {entry!r}")
    folder = os.path.normpath(os.path.join(root, entry))
    if not os.path.isdir(folder) and entry.startswith("../"):
        folder = os.path.normpath(os.path.join(root, entry[3:]))
    if not os.path.isdir(folder):
        raise UserError(f"{path}: the {key} image folder {entry} is not a folder under {root}")
    return folder


def label_folder(image_dir: str, path: str) -> str:
    """ultralytics' rule: the labels of .../images/... are in .../labels/... (the last 'images' in the path)."""
    parts = os.path.normpath(image_dir).split(os.sep)
    if "images" not in parts:
        raise UserError(f"{path}: the image folder {image_dir} has no 'images' in its path, so no labels folder "
                        "(ultralytics reads labels from the folder named like it with images -> labels)")
    k = len(parts) - 1 - parts[::-1].index("images")
    return os.sep.join(parts[:k] + ["labels"] + parts[k + 1:])


def convert_data_yaml(path: str, output_dir: str) -> List[Tuple[str, Dict, Dict[str, int]]]:
    """Both splits of an ultralytics data YAML, every label of both checked before anything is written;
    returns (split, coco, counts) of each."""
    data = read_yaml(path)
    names = yaml_names(data, path)
    root = os.path.join(os.path.dirname(os.path.abspath(path)), str(data.get("path") or ""))
    kpt = data.get("kpt_shape")
    if kpt is not None and not (isinstance(kpt, list) and len(kpt) == 2 and all(isinstance(v, int) for v in kpt)):
        raise UserError(f"{path}: kpt_shape must be [points, 2 or 3], got {kpt!r}")
    keypoint_columns = 5 + kpt[0] * kpt[1] if kpt else 0
    missing = [k for k in SPLITS if not data.get(k)]
    if missing:
        raise UserError(f"{path}: needs '{missing[0]}', its image folder")
    splits = []
    for key in SPLITS:
        images = _data_folder(root, data[key], key, path)
        splits.append(Split(key, images, label_folder(images, path), output_dir))
    for split in splits:
        split.check_output()
    read = [read_yolo(s.image_dir, s.label_dir, path, names, keypoint_columns)[0] for s in splits]
    return [(s.name, *write_split(s, items, names)) for s, items in zip(splits, read)]


def report(coco: Dict, counts: Dict[str, int], output_dir: str, split: str) -> None:
    """What was written, as print lines."""
    without = len(coco["images"]) - len({ann["image_id"] for ann in coco["annotations"]})
    print(f"wrote {len(coco['images'])} images ({without} without boxes) and {len(coco['annotations'])} boxes to "
          f"{os.path.join(output_dir, 'annotations', f'instances_{split}2017.json')} and "
          f"{os.path.join(output_dir, f'{split}2017')}")
    if counts["clipped"]:
        print(f"clipped {counts['clipped']} boxes to their image ({counts['dropped']} left empty, dropped)")


def main() -> None:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="", help="an ultralytics data YAML: converts its train and val splits")
    p.add_argument("--format", choices=("voc", "yolo"), help="label format")
    p.add_argument("--images", help="folder of the images")
    p.add_argument("--labels", help="folder of the .xml (voc) or .txt (yolo) label files")
    p.add_argument("--output_dir", required=True, help="data set root to write (COCO layout)")
    p.add_argument("--split", choices=SPLITS, help="which split to write")
    p.add_argument("--classes", default="", help="class names, one a line, or an ultralytics data YAML "
                                                 "(yolo default: LABELS/classes.txt)")
    a = p.parse_args()
    if a.data:
        given = [f"--{k}" for k in ("format", "images", "labels", "split", "classes") if getattr(a, k)]
        if given:
            raise UserError(f"--data takes the splits, folders and names from the YAML; leave out {', '.join(given)}")
        written = convert_data_yaml(a.data, a.output_dir)
    else:
        lacking = [f"--{k}" for k in ("format", "images", "labels", "split") if not getattr(a, k)]
        if lacking:
            raise UserError(f"give --data DATA.yaml, or {', '.join(lacking)} (see --help)")
        written = [(a.split, *convert(a.format, a.images, a.labels, a.output_dir, a.split, a.classes))]
    for split, coco, counts in written:
        report(coco, counts, a.output_dir, split)
    names = [c["name"] for c in written[0][1]["categories"]]
    print(f"{len(names)} classes, category ids 1..{len(names)}: {', '.join(names)}")
    if a.format == "voc" and not a.classes:
        print("category ids follow the sorted class names found; convert other splits with --classes "
              "listing them in this order")


if __name__ == "__main__":
    run_cli(main)

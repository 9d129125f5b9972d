"""src.data.convert_labels: VOC XML and YOLO txt written here come back as the same COCO boxes; bad files are
one-line errors naming the file, with nothing written."""
import json
import os
import sys

import cv2
import numpy as np
import pytest

from conftest import run_script

# (file name, width, height, [(class name, x1, y1, x2, y2) in pixels])
IMAGES = [
    ("street.jpg", 120, 90, [("dog", 10.3, 20.7, 60.2, 80.9), ("cat", 70.0, 5.5, 119.6, 44.4)]),
    ("park.png", 64, 100, [("bird", 0.0, 0.0, 31.7, 12.2), ("dog", 20.4, 50.5, 63.0, 99.5),
                           ("cat", 5.0, 60.0, 15.0, 70.0)]),
    ("empty.jpg", 50, 40, []),
]
YOLO_CLASSES = ["dog", "cat", "bird"]  # deliberately not sorted: ids must follow this file


def convert(*args: str, check: bool = True):
    return run_script(sys.executable, "-m", "src.data.convert_labels", *args, check=check)


def write_images(folder):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, w, h, _ in IMAGES:
        cv2.imwrite(os.path.join(folder, name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def write_voc(folder, with_size=True):
    """VOC convention: 1-based inclusive pixel indices, so a box [x1, x2) has xmin x1 + 1, xmax x2."""
    os.makedirs(folder, exist_ok=True)
    for name, w, h, boxes in IMAGES:
        objs = "".join(
            f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{round(x1) + 1}</xmin>"
            f"<ymin>{round(y1) + 1}</ymin><xmax>{round(x2)}</xmax><ymax>{round(y2)}</ymax></bndbox></object>"
            for c, x1, y1, x2, y2 in boxes)
        size = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>" if with_size else ""
        with open(os.path.join(folder, os.path.splitext(name)[0] + ".xml"), "w") as f:
            f.write(f"<annotation><folder>x</folder><filename>{name}</filename>{size}{objs}</annotation>")


def write_yolo(folder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "classes.txt"), "w") as f:
        f.write("\n".join(YOLO_CLASSES) + "\n")
    for name, w, h, boxes in IMAGES:
        if not boxes:
            continue  # an image without a label file: no boxes
        with open(os.path.join(folder, os.path.splitext(name)[0] + ".txt"), "w") as f:
            for c, x1, y1, x2, y2 in boxes:
                f.write(f"{YOLO_CLASSES.index(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                        f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n")


def load_split(root, split="train"):
    with open(os.path.join(root, "annotations", f"instances_{split}2017.json")) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    got = {}
    for img in coco["images"]:
        assert os.path.isfile(os.path.join(root, f"{split}2017", img["file_name"]))
        got[img["file_name"]] = (img["width"], img["height"], [
            (names[a["category_id"]], a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
             a["bbox"][1] + a["bbox"][3]) for a in coco["annotations"] if a["image_id"] == img["id"]])
    return coco, got


def assert_round_trip(got):
    assert sorted(got) == sorted(name for name, *_ in IMAGES)
    for name, w, h, boxes in IMAGES:
        gw, gh, gboxes = got[name]
        assert (gw, gh) == (w, h)
        assert [b[0] for b in gboxes] == [b[0] for b in boxes]
        np.testing.assert_allclose(np.array([b[1:] for b in gboxes]).reshape(-1, 4),
                                   np.array([b[1:] for b in boxes]).reshape(-1, 4), atol=0.5)


@pytest.mark.parametrize("with_size", [True, False])
def test_voc_round_trip(tmp_path, with_size):
    write_images(tmp_path / "images")
    write_voc(tmp_path / "xml", with_size)
    out = tmp_path / "coco"
    proc = convert("--format", "voc", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "xml"),
                   "--output_dir", str(out), "--split", "train")
    assert "3 images (1 without boxes) and 5 boxes" in proc.stdout
    coco, got = load_split(out)
    assert [c["name"] for c in coco["categories"]] == ["bird", "cat", "dog"]
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert_round_trip(got)


def test_voc_classes_file_difficult_and_clipping(tmp_path):
    write_images(tmp_path / "images")
    os.makedirs(tmp_path / "xml")
    (tmp_path / "xml" / "street.xml").write_text(
        "<annotation><filename>street.jpg</filename><size><width>120</width><height>90</height></size>"
        "<object><name>cat</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax>"
        "<ymax>20</ymax></bndbox></object>"
        "<object><name>dog</name><bndbox><xmin>100</xmin><ymin>-5</ymin><xmax>150</xmax><ymax>30</ymax>"
        "</bndbox></object>"
        "<object><name>dog</name><bndbox><xmin>200</xmin><ymin>5</ymin><xmax>250</xmax><ymax>30</ymax>"
        "</bndbox></object></annotation>")
    (tmp_path / "names.txt").write_text("dog\ncat\nbird\n")
    proc = convert("--format", "voc", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "xml"),
                   "--output_dir", str(tmp_path / "coco"), "--split", "val", "--classes", str(tmp_path / "names.txt"))
    assert "clipped 2 boxes to their image (1 left empty, dropped)" in proc.stdout
    coco, got = load_split(tmp_path / "coco", "val")
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "dog"), (2, "cat"), (3, "bird")]
    assert [a["iscrowd"] for a in coco["annotations"]] == [1, 0]
    assert got["street.jpg"][2] == [("cat", 0.0, 0.0, 20.0, 20.0), ("dog", 99.0, 0.0, 120.0, 30.0)]


def test_yolo_round_trip(tmp_path):
    write_images(tmp_path / "images")
    write_yolo(tmp_path / "labels")
    out = tmp_path / "coco"
    proc = convert("--format", "yolo", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
                   "--output_dir", str(out), "--split", "train")
    assert "3 images (1 without boxes) and 5 boxes" in proc.stdout
    coco, got = load_split(out)
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "dog"), (2, "cat"), (3, "bird")]
    assert_round_trip(got)
    from src.data.dataset import CocoTrainSet
    data = CocoTrainSet(str(out / "annotations" / "instances_train2017.json"), str(out / "train2017"))
    assert data.names == YOLO_CLASSES and len(data) == 2 and data.load(0) is not None


def test_yolo_boxes_clipped_to_the_image(tmp_path):
    write_images(tmp_path / "images")
    write_yolo(tmp_path / "labels")
    (tmp_path / "labels" / "empty.txt").write_text("2 0.9 0.1 0.4 0.4\n")  # 50 x 40: x 35..55, y -4..12
    convert("--format", "yolo", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
            "--output_dir", str(tmp_path / "coco"), "--split", "train")
    _, got = load_split(tmp_path / "coco")
    np.testing.assert_allclose(got["empty.jpg"][2][0][1:], [35.0, 0.0, 50.0, 12.0], atol=0.01)
    assert got["empty.jpg"][2][0][0] == "bird"


VOC_BAD_BOX = ("<annotation><filename>park.png</filename><object><name>dog</name>"
               "<bndbox><xmin>a</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")


# (format, the file the test writes (or removes, with None) and its content, the error expected)
@pytest.mark.parametrize("fmt,path,content,expected", [
    ("voc", "xml/park.xml", "<annotation><filename>park.png</filename><object>", "park.xml"),
    ("voc", "images/street.jpg", None, "street.xml"),
    ("voc", "xml/park.xml", VOC_BAD_BOX, "park.xml"),
    ("yolo", "labels/park.txt", "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n", "park.txt: line 2: expected 5 columns"),
    ("yolo", "labels/street.txt", "3 0.5 0.5 0.2 0.2\n", "street.txt: line 1: class 3 is not an index 0..2"),
    ("yolo", "labels/lost.txt", "0 0.5 0.5 0.2 0.2\n", "lost.txt: no image lost.*"),
    ("yolo", "labels/park.txt", "0 32 50 10 10\n", "park.txt: line 1: cx cy w h must be normalised"),
    ("yolo", "images/park.png", "not a png", "park.png: not a readable image")])
def test_bad_files_are_one_line_errors(tmp_path, fmt, path, content, expected):
    write_images(tmp_path / "images")
    labels = tmp_path / ("xml" if fmt == "voc" else "labels")
    write_voc(labels) if fmt == "voc" else write_yolo(labels)
    if content is None:
        os.remove(tmp_path / path)
    else:
        (tmp_path / path).write_text(content)
    out = tmp_path / "coco"
    proc = convert("--format", fmt, "--images", str(tmp_path / "images"), "--labels", str(labels),
                   "--output_dir", str(out), "--split", "train", check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0], lines[0]
    assert not out.exists()


def test_existing_output_is_kept(tmp_path):
    write_images(tmp_path / "images")
    write_yolo(tmp_path / "labels")
    args = ("--format", "yolo", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
            "--output_dir", str(tmp_path / "coco"), "--split", "train")
    convert(*args)
    ann = tmp_path / "coco" / "annotations" / "instances_train2017.json"
    before = ann.read_bytes()
    proc = convert(*args, check=False)
    assert proc.returncode != 0 and "already exists" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert ann.read_bytes() == before


def test_images_already_in_place(tmp_path):
    root = tmp_path / "coco"
    write_images(root / "val2017")
    write_yolo(tmp_path / "labels")
    convert("--format", "yolo", "--images", str(root / "val2017"), "--labels", str(tmp_path / "labels"),
            "--output_dir", str(root), "--split", "val")
    _, got = load_split(root, "val")
    assert_round_trip(got)
    assert sorted(os.listdir(root)) == ["annotations", "val2017"]


def write_ultralytics(root, names_yaml: str, data_lines: str = "path: .\ntrain: images/train\nval: images/val\n"):
    """An ultralytics layout: images/{train,val}, labels/{train,val} (YOLO lines of write_yolo), data.yaml."""
    for split in ("train", "val"):
        write_images(root / "images" / split)
        write_yolo(root / "labels" / split)
        os.remove(root / "labels" / split / "classes.txt")
    (root / "data.yaml").write_text(data_lines + names_yaml)
    return root / "data.yaml"


@pytest.mark.parametrize("names_yaml", [
    "names: [dog, cat, bird]\n",
    "names:\n  0: dog\n  1: cat\n  2: bird\n",
    "names: {2: bird, 0: dog, 1: cat}\n",
    "names: {'0': dog, '1': cat, '2': bird}\n"])
def test_data_yaml_writes_both_splits(tmp_path, names_yaml):
    """--data: names as a list or an {index: name} map (in any key order), train and val in one command."""
    data = write_ultralytics(tmp_path / "ds", names_yaml)
    proc = convert("--data", str(data), "--output_dir", str(tmp_path / "coco"))
    assert proc.stdout.count("3 images (1 without boxes) and 5 boxes") == 2
    for split in ("train", "val"):
        coco, got = load_split(tmp_path / "coco", split)
        assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "dog"), (2, "cat"), (3, "bird")]
        assert_round_trip(got)


def test_roboflow_data_yaml_and_classes_from_yaml(tmp_path):
    """Roboflow's YOLO export: train/images, valid/images, given as ../ paths; and --classes DATA.yaml."""
    root = tmp_path / "rf"
    for split, folder in (("train", "train"), ("val", "valid")):
        write_images(root / folder / "images")
        write_yolo(root / folder / "labels")
        os.remove(root / folder / "labels" / "classes.txt")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 3\n"
                                    "names: ['dog', 'cat', 'bird']\n")
    convert("--data", str(root / "data.yaml"), "--output_dir", str(tmp_path / "coco"))
    assert_round_trip(load_split(tmp_path / "coco", "val")[1])
    convert("--format", "yolo", "--images", str(root / "train" / "images"), "--labels",
            str(root / "train" / "labels"), "--output_dir", str(tmp_path / "one"), "--split", "train",
            "--classes", str(root / "data.yaml"))
    coco, got = load_split(tmp_path / "one")
    assert [c["name"] for c in coco["categories"]] == YOLO_CLASSES
    assert_round_trip(got)


def polygon(x1, y1, x2, y2, w, h):
    """A hexagon touching all four sides of the box, as normalised 'x y' pairs."""
    xm, ym = (x1 + x2) / 2, (y1 + y2) / 2
    points = [(x1, ym), ((x1 + xm) / 2, y1), (x2, y1), (x2, ym), (xm, y2), (x1, y2)]
    return " ".join(f"{x / w:.6f} {y / h:.6f}" for x, y in points)


def test_segmentation_lines_become_their_boxes(tmp_path):
    """ultralytics' and Roboflow's polygon lines give the same boxes as the box lines (mixed in one file too)."""
    write_images(tmp_path / "images")
    write_yolo(tmp_path / "labels")
    for name, w, h, boxes in IMAGES:
        if boxes:
            lines = [f"{YOLO_CLASSES.index(c)} {polygon(x1, y1, x2, y2, w, h)}" for c, x1, y1, x2, y2 in boxes]
            with open(tmp_path / "labels" / (os.path.splitext(name)[0] + ".txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
    convert("--format", "yolo", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
            "--output_dir", str(tmp_path / "coco"), "--split", "train")
    assert_round_trip(load_split(tmp_path / "coco")[1])


def test_keypoint_lines_need_kpt_shape(tmp_path):
    """A keypoint line (box + 3 points x y v = 14 columns) is an error without kpt_shape, its box with it."""
    data = write_ultralytics(tmp_path / "ds", "names: [dog, cat, bird]\n")
    label = tmp_path / "ds" / "labels" / "val" / "street.txt"
    street_boxes = label.read_text().splitlines()
    label.write_text("".join(f"{line} 0.1 0.2 2 0.3 0.4 1 0.5 0.6 0\n" for line in street_boxes))
    proc = convert("--data", str(data), "--output_dir", str(tmp_path / "coco"), check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "street.txt: line 1: expected 5 columns" in proc.stderr and "kpt_shape" in proc.stderr
    assert not (tmp_path / "coco").exists()  # the train split was fine, but nothing is written
    data.write_text(data.read_text() + "kpt_shape: [3, 3]\n")
    convert("--data", str(data), "--output_dir", str(tmp_path / "coco"))
    assert_round_trip(load_split(tmp_path / "coco", "val")[1])


SPLITS_YAML = "path: .\ntrain: images/train\nval: images/val\n"


@pytest.mark.parametrize("content, expected", [
    (SPLITS_YAML + "names: {0: dog, 2: cat}\n", "'names' must map each index 0..1 to a name"),
    (SPLITS_YAML + "nc: 3\n", "needs 'names'"),
    (SPLITS_YAML + "names: [dog, dog]\n", "class 'dog' is listed twice"),
    ("- dog\n", "expected a YAML mapping"),
    ("path: .\nval: images/val\nnames: [dog, cat, bird]\n", "needs 'train', its image folder"),
    ("path: .\ntrain: images/nowhere\nval: images/val\nnames: [dog, cat, bird]\n",
     "the train image folder images/nowhere is not a folder")])
def test_bad_data_yaml_is_a_one_line_error(tmp_path, content, expected):
    data = write_ultralytics(tmp_path / "ds", "")
    data.write_text(content)
    proc = convert("--data", str(data), "--output_dir", str(tmp_path / "coco"), check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert not (tmp_path / "coco").exists()


@pytest.mark.parametrize("args, expected", [
    (["--format", "yolo", "--images", "x"], "give --data DATA.yaml, or --labels, --split"),
    (["--data", "d.yaml", "--split", "val"], "--data takes the splits, folders and names from the YAML; leave out "
                                             "--split")])
def test_data_or_split_options(tmp_path, args, expected):
    proc = convert(*args, "--output_dir", str(tmp_path / "coco"), check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and expected in lines[0], proc.stderr

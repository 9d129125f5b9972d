"""src.data.synthetic: the textured and plain styles are unchanged for a seed; the plain and lowcontrast styles, the
size range."""
import json
import sys

import cv2
import numpy as np

from conftest import run_script
from src.data.synthetic import STYLES, make_dataset, make_image

# make_image(np.random.default_rng(7), 96, 12, 40) four times, produced by src/data/synthetic.py before the styles
# were added (commit 1324d30): the objects exactly, and each image's per-channel pixel means (to 0.05, so that
# OpenCV's resize rounding on another CPU does not matter; any change of the background moves them far more).
GOLDEN = [
    ([(0, [3.0, 51.0, 28.0, 28.0])], [146.549, 137.813, 146.651]),
    ([(2, [43.0, 35.0, 33.0, 33.0]), (1, [3.0, 39.0, 36.0, 36.0])], [157.581, 119.412, 131.913]),
    ([(0, [60.0, 8.0, 16.0, 16.0])], [159.47, 167.556, 144.008]),
    ([(2, [1.0, 22.0, 26.0, 26.0]), (2, [64.0, 41.0, 13.0, 13.0]), (0, [39.0, 60.0, 13.0, 13.0]),
      (1, [22.0, 73.0, 15.0, 15.0])], [157.99, 141.544, 146.116]),
]


def test_default_style_unchanged():
    rng = np.random.default_rng(7)
    for objects, means in GOLDEN:
        img, got = make_image(rng, 96, 12, 40)
        assert got == objects
        np.testing.assert_allclose(img.reshape(-1, 3).mean(axis=0), means, atol=0.05)


# make_image(np.random.default_rng(7), 96, 12, 40, "plain") three times, produced by src/data/synthetic.py before the
# lowcontrast style was added (commit 59f7423), as GOLDEN above.
GOLDEN_PLAIN = [
    ([(1, [36.0, 0.0, 22.0, 22.0]), (2, [18.0, 67.0, 27.0, 27.0]), (0, [62.0, 39.0, 13.0, 13.0])],
     [220.312, 155.146, 163.92]),
    ([(0, [14.0, 32.0, 38.0, 38.0]), (2, [55.0, 2.0, 18.0, 18.0]), (0, [56.0, 61.0, 34.0, 34.0]),
      (2, [69.0, 34.0, 15.0, 15.0])], [123.265, 155.396, 200.004]),
    ([(0, [54.0, 15.0, 23.0, 23.0]), (2, [69.0, 61.0, 20.0, 20.0]), (1, [16.0, 45.0, 25.0, 25.0])],
     [207.099, 140.126, 111.494]),
]


def test_plain_style_unchanged():
    rng = np.random.default_rng(7)
    for objects, means in GOLDEN_PLAIN:
        img, got = make_image(rng, 96, 12, 40, "plain")
        assert got == objects
        np.testing.assert_allclose(img.reshape(-1, 3).mean(axis=0), means, atol=0.05)


def high_frequency(img: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_32F)).mean())


def test_plain_style_and_size_range(tmp_path):
    proc = run_script(sys.executable, "-m", "src.data.synthetic", "--output_dir", str(tmp_path), "--num_train", "6",
                      "--num_val", "2", "--image_size", "128", "--style", "plain", "--min_size", "20",
                      "--max_size", "30", "--seed", "4")
    assert "wrote 6 train and 2 val plain images" in proc.stdout
    with open(tmp_path / "annotations" / "instances_train2017.json") as f:
        coco = json.load(f)
    assert len(coco["images"]) == 6 and coco["annotations"]
    sides = [a["bbox"][2] for a in coco["annotations"]]
    assert min(sides) >= 20 and max(sides) <= 30
    # the background: plain has far less fine detail than textured; shapes alone keep its Laplacian above 0
    plain = [make_image(np.random.default_rng(s), 128, 20, 30, "plain")[0] for s in range(4)]
    textured = [make_image(np.random.default_rng(s), 128, 20, 30, "textured")[0] for s in range(4)]
    assert max(map(high_frequency, plain)) * 3 < min(map(high_frequency, textured))
    for img in plain:
        # near-uniform: the median colour covers most of the image within +-40 per channel
        assert (np.abs(img.astype(int) - np.median(img.reshape(-1, 3), axis=0)).max(axis=2) <= 40).mean() > 0.6


def test_same_seed_same_set_and_bad_sizes(tmp_path):
    make_dataset(str(tmp_path / "a"), 3, 1, 96, seed=2, min_size=12, max_size=40, style="plain")
    make_dataset(str(tmp_path / "b"), 3, 1, 96, seed=2, min_size=12, max_size=40, style="plain")
    for split in ("train2017", "val2017"):
        a = (tmp_path / "a" / "annotations" / f"instances_{split}.json").read_text()
        assert a == (tmp_path / "b" / "annotations" / f"instances_{split}.json").read_text()
    proc = run_script(sys.executable, "-m", "src.data.synthetic", "--output_dir", str(tmp_path / "c"),
                      "--min_size", "50", "--max_size", "40", check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "error: object sizes need 2 <= min_size <= max_size < image_size, got 50, 40, 320")
    assert not (tmp_path / "c").exists()


def read_set(root) -> tuple:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return [str(p.relative_to(root)) for p in files], [p.read_bytes() for p in files]


def contrasts(style: str, seed: int, size: int, min_size: int, max_size: int) -> list:
    """RGB distance of each shape's centre pixel from the mean of the background under its box."""
    img, objects = make_image(np.random.default_rng(seed), size, min_size, max_size, style)
    background = STYLES[style].background(np.random.default_rng(seed), size)  # drawn first: the same picture
    out = []
    for _, (x, y, w, _h) in objects:
        x, y, w = int(x), int(y), int(w)
        under = background[y:y + w, x:x + w].reshape(-1, 3).mean(axis=0)
        out.append(float(np.linalg.norm(img[y + w // 2, x + w // 2].astype(float) - under)))
    return out


def test_lowcontrast_style(tmp_path):
    args = ["--num_train", "4", "--num_val", "2", "--image_size", "192", "--style", "lowcontrast", "--seed", "3"]
    proc = run_script(sys.executable, "-m", "src.data.synthetic", "--output_dir", str(tmp_path / "a"), *args)
    assert "wrote 4 train and 2 val lowcontrast images" in proc.stdout
    run_script(sys.executable, "-m", "src.data.synthetic", "--output_dir", str(tmp_path / "b"), *args)
    names, data = read_set(tmp_path / "a")
    assert len(names) == 8 and read_set(tmp_path / "b") == (names, data)
    make_dataset(str(tmp_path / "p"), 4, 2, 192, seed=3, min_size=12, max_size=160, style="plain")
    plain_names, plain_data = read_set(tmp_path / "p")
    assert plain_names == names and all(a != b for a, b in zip(plain_data, data))
    boxes = []
    for split in ("train2017", "val2017"):
        with open(tmp_path / "a" / "annotations" / f"instances_{split}.json") as f:
            boxes += [a["bbox"] for a in json.load(f)["annotations"]]
    assert len(boxes) >= 6
    for x, y, w, h in boxes:  # the style's own size range, every box inside the image
        assert 12 <= w == h <= 160 and x >= 0 and y >= 0 and x + w <= 192 and y + h <= 192
    # shapes close in colour to what they cover; plain's, drawn from any colour, mostly far
    low = [d for s in range(4) for d in contrasts("lowcontrast", s, 192, 12, 160)]
    assert low and min(low) >= 23 and max(low) <= 57
    assert np.median([d for s in range(4) for d in contrasts("plain", s, 192, 12, 160)]) > 60
    for s in range(4):  # still near-uniform: the median colour covers most of the image within +-40 per channel
        img = make_image(np.random.default_rng(s), 192, 12, 160, "lowcontrast")[0]
        assert (np.abs(img.astype(int) - np.median(img.reshape(-1, 3), axis=0)).max(axis=2) <= 40).mean() > 0.6

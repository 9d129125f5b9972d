"""Letterbox/stretch mapping, NMS and detection selection."""
import numpy as np

from src.data.transforms import boxes_to_image, letterbox, preprocess, stretch
from src.engine.nms import nms, select_detections


def test_letterbox_keeps_aspect_and_pads_grey():
    img = np.full((100, 200, 3), 255, np.uint8)
    out, (sx, sy, dx, dy) = letterbox(img, 416)
    assert out.shape == (416, 416, 3) and sx == sy == 416 / 200 and (dx, dy) == (0, 104)
    assert (out[:104] == 127).all() and (out[-104:] == 127).all() and (out[104:-104] == 255).all()


def test_box_mapping_round_trip():
    img = np.zeros((300, 500, 3), np.uint8)
    box = np.array([[120.0, 40.0, 60.0, 90.0]])  # x, y, w, h in the image
    for fn in (letterbox, stretch):
        _, (sx, sy, dx, dy) = fn(img, 320)
        net = np.array([[(box[0, 0] + box[0, 2] / 2) * sx + dx, (box[0, 1] + box[0, 3] / 2) * sy + dy,
                         box[0, 2] * sx, box[0, 3] * sy]])
        np.testing.assert_allclose(boxes_to_image(net, (sx, sy, dx, dy)), box, atol=1e-9)


def test_preprocess_is_rgb_chw_unit_range():
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    chw, _ = preprocess(img, 32, use_letterbox=False)
    assert chw.shape == (3, 32, 32) and chw.dtype == np.float32
    assert chw[2].min() == 1.0 and chw[0].max() == 0.0


def _iou(a, b):
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_nms_matches_brute_force_greedy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        boxes = np.concatenate([rng.uniform(0, 100, (60, 2)), rng.uniform(5, 50, (60, 2))], 1)
        scores = rng.uniform(0, 1, 60)
        keep = []
        for i in np.argsort(-scores):
            if all(_iou(boxes[i], boxes[k]) <= 0.45 for k in keep):
                keep.append(i)
        assert nms(boxes, scores, 0.45).tolist() == keep


def test_select_detections_is_per_class_with_top_k():
    rows = np.zeros((3, 5 + 2), np.float32)
    rows[:, :4] = [[50, 50, 20, 20], [51, 50, 20, 20], [50, 51, 20, 20]]
    rows[:, 4] = [0.9, 0.8, 0.7]
    rows[0, 5:] = [0.9, 0.0]
    rows[1, 5:] = [0.9, 0.0]  # same class, overlaps row 0: suppressed
    rows[2, 5:] = [0.0, 0.9]  # other class: kept
    boxes, scores, labels, _ = select_detections(rows, 0.005, 0.45, 100)
    assert labels.tolist() == [0, 1]
    np.testing.assert_allclose(scores, [0.81, 0.63], rtol=1e-6)
    np.testing.assert_allclose(boxes[0], [50, 50, 20, 20])
    assert select_detections(rows, 0.005, 0.45, 1)[2].tolist() == [0]
    assert select_detections(rows, 0.95, 0.45, 100)[0].shape == (0, 4)


def test_nms_early_stop_gives_the_same_top_k():
    """Stopping each class's NMS after max_boxes kept changes nothing in the final top max_boxes."""
    from src.engine import nms as nms_module
    rng = np.random.default_rng(3)
    rows = np.concatenate([rng.uniform(0, 300, (3000, 2)), rng.uniform(5, 60, (3000, 2)),
                           rng.uniform(0, 1, (3000, 4))], 1).astype(np.float32)
    capped = select_detections(rows, 0.005, 0.45, 20)
    full_nms = nms_module.nms
    nms_module.nms = lambda b, s, t, max_keep=0: full_nms(b, s, t)
    try:
        uncapped = select_detections(rows, 0.005, 0.45, 20)
    finally:
        nms_module.nms = full_nms
    for a, b in zip(capped, uncapped):
        np.testing.assert_array_equal(a, b)
    assert nms(rows[:, :4], rows[:, 4], 0.45, 5).tolist() == nms(rows[:, :4], rows[:, 4], 0.45)[:5].tolist()

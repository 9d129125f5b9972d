"""The hard parts of training, pinned to hand-worked values."""
import math
import warnings

import cv2
import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor, nn

from conftest import TINY_CFG
from model_utils.config import load_config
from src.models.spec import ModelSpec
from src.data.augment import hflip, jitter, letterbox_boxes
from src.data.sampler import DistributedSampler
from src.data.targets import build_targets, shape_iou
from src.data.transforms import boxes_to_image, letterbox
from src.engine.loss import YoloLoss, YoloWithLoss, giou
from src.engine.lr_scheduler import get_lr
from src.engine.train_step import make_train_step
from src.models.yolo import build_network

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", jit_config={"jit_level": "O0"})
TINY_ANCHORS = [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]]


def test_target_goes_to_best_anchor_at_centre_cell():
    box = np.array([[150.0, 110.0, 250.0, 190.0]])  # 100 x 80 centred at (200, 150)
    iou = shape_iou(np.array([[100.0, 80.0]]), np.array(TINY_ANCHORS, np.float32))[0]
    assert iou.argmax() == 3 and iou[3] == pytest.approx(6480 / 8162)
    t13, t26, gts = build_targets(box, np.array([2]), 416, TINY_ANCHORS, [[3, 4, 5], [0, 1, 2]], 5, 4)
    assert t13.shape == (13, 13, 3, 11) and t26.shape == (26, 26, 3, 11)
    assert t13[..., 4].sum() == 1 and t26[..., 4].sum() == 0
    cell = t13[4, 6, 0]  # gy = int(150 / 32), gx = int(200 / 32), first anchor of the mask
    np.testing.assert_allclose(cell[:4], [200 / 416, 150 / 416, 100 / 416, 80 / 416], rtol=1e-6)
    assert cell[4] == 1 and cell[5] == pytest.approx(2 - 100 * 80 / 416 ** 2)
    np.testing.assert_array_equal(cell[6:], [0, 0, 1, 0, 0])
    assert gts.shape == (4, 4 + 5)
    np.testing.assert_allclose(gts[0, :4], cell[:4])
    np.testing.assert_array_equal(gts[0, 4:], cell[6:])
    np.testing.assert_array_equal(gts[1:], 0)


def test_label_smoothing_targets():
    t = build_targets(np.array([[0.0, 0.0, 20.0, 20.0]]), np.array([1]), 64, TINY_ANCHORS, [[3, 4, 5], [0, 1, 2]],
                      4, 2, label_smooth_factor=0.2)[1]
    cls = t[t[..., 4] == 1][0, 6:]
    np.testing.assert_allclose(cls, [0.05, 0.85, 0.05, 0.05], rtol=1e-6)


def test_giou_hand_values():
    a = Tensor(np.array([[2, 2, 2, 2], [0.5, 0.5, 1, 1], [1, 1, 2, 2]], np.float32))
    b = Tensor(np.array([[3, 3, 2, 2], [2.5, 0.5, 1, 1], [1, 1, 2, 2]], np.float32))
    got = giou(a, b).asnumpy()[:, 0]
    np.testing.assert_allclose(got, [1 / 7 - 2 / 9, -1 / 3, 1.0], rtol=1e-5)


def test_ignore_mask_drops_objectness_loss_of_good_predictions():
    """With zero logits every prediction costs ln 2 of objectness loss; a ground truth matching the
    prediction at cell (0, 0), anchor 0 exactly must remove that one term (IoU 1 > 0.7)."""
    anchors = [[10, 10], [60, 20], [20, 60]]
    loss = YoloLoss(anchors, 2, 0.7)
    p = Tensor(np.zeros((1, 3 * 7, 4, 4), np.float32))
    target = Tensor(np.zeros((1, 4, 4, 3, 8), np.float32))
    far = np.array([[[0.9, 0.9, 0.01, 0.01, 1, 0]]], np.float32)
    match = np.array([[[0.5 / 4, 0.5 / 4, 10 / 128, 10 / 128, 1, 0]]], np.float32)
    base = float(loss(p, target, Tensor(far), 128, 128).sum().asnumpy())
    ignored = float(loss(p, target, Tensor(match), 128, 128).sum().asnumpy())
    assert base == pytest.approx(4 * 4 * 3 * math.log(2), rel=1e-5)
    assert base - ignored == pytest.approx(math.log(2), rel=1e-4)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize("second_gt, assigned", [(False, False), (True, False), (False, True)])
def test_class_loss_on_ignored_predictions(second_gt, assigned):
    """Class logits (2, -1) everywhere; a class-1 ground truth matching the prediction at cell (0, 0),
    anchor 0 exactly (IoU 1 > 0.7). Unassigned, that prediction learns class 1 only with
    class_loss_on_ignored: BCE(2, 0) + BCE(-1, 1) = softplus(2) + softplus(1). A class-0 ground truth it
    overlaps less (IoU 100 / 121 = 0.83, also above 0.7) does not change its target. Assigned, it is
    trained once, by its target, either way."""
    anchors = [[10, 10], [60, 20], [20, 60]]
    maps = np.zeros((1, 3, 7, 4, 4), np.float32)
    maps[:, :, 5], maps[:, :, 6] = 2.0, -1.0
    p = Tensor(maps.reshape(1, 21, 4, 4))
    gts = [[0.5 / 4, 0.5 / 4, 10 / 128, 10 / 128, 0, 1]] + ([[0.5 / 4, 0.5 / 4, 11 / 128, 11 / 128, 1, 0]]
                                                            if second_gt else [])
    gts = Tensor(np.array([gts], np.float32))
    target = np.zeros((1, 4, 4, 3, 8), np.float32)
    if assigned:
        target[0, 0, 0, 0] = [0.5 / 4, 0.5 / 4, 10 / 128, 10 / 128, 1, 1, 0, 1]
    target = Tensor(target)
    off = YoloLoss(anchors, 2, 0.7)(p, target, gts, 128, 128).asnumpy()
    on = YoloLoss(anchors, 2, 0.7, class_loss_on_ignored=True)(p, target, gts, 128, 128).asnumpy()
    expected = softplus(2) + softplus(1)
    assert off[2] == pytest.approx(expected if assigned else 0.0, rel=1e-5)
    assert on[2] == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(on[:2], off[:2], rtol=1e-6)


def _one_step(loss_scale: float, batch):
    ms.set_seed(5)
    cfg = load_config(["--config_path", TINY_CFG, "--num_classes", "2"])
    net = build_network(ModelSpec.from_config(cfg))
    opt = nn.Momentum(net.trainable_params(), 0.01, 0.9)
    step = make_train_step(YoloWithLoss(net, cfg.anchor_scales, cfg.anchor_mask, 2, 0.7), opt, loss_scale)
    step.set_train(True)
    loss, overflow, _ = step(*batch)
    return _weights(net), float(loss.asnumpy()), bool(overflow.asnumpy())


def _weights(net):
    return {n: p.asnumpy().copy() for n, p in net.parameters_and_names() if p.requires_grad}


def test_loss_scale_gives_the_same_update_and_skips_overflow():
    rng = np.random.default_rng(0)
    cfg = load_config(["--config_path", TINY_CFG])
    targets = build_targets(np.array([[10.0, 12.0, 40.0, 50.0]]), np.array([1]), 64, cfg.anchor_scales,
                            cfg.anchor_mask, 2, 4)
    batch = [Tensor(rng.uniform(0, 1, (1, 3, 64, 64)).astype(np.float32))] + [Tensor(t[None]) for t in targets]
    ms.set_seed(5)
    init = _weights(build_network(ModelSpec.from_config(load_config(["--config_path", TINY_CFG,
                                                                     "--num_classes", "2"]))))
    p1, l1, o1 = _one_step(1.0, batch)
    p2, l2, o2 = _one_step(1024.0, batch)
    assert not o1 and not o2 and l1 == pytest.approx(l2, rel=1e-6)
    moved = 0
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-4, atol=1e-6)
        moved += not np.allclose(p1[k], init[k])
    assert moved > 10
    p3, _, o3 = _one_step(3e38, batch)
    assert o3
    for k in p3:
        np.testing.assert_array_equal(p3[k], init[k])


def test_lr_schedules():
    exp = get_lr("exponential", 0.1, 10, 5, 1, lr_epochs=[2, 4], lr_gamma=0.1)
    assert exp.shape == (50,)
    np.testing.assert_allclose(exp[[0, 4, 9, 10, 19, 20, 39, 40, 49]],
                               [0.01, 0.05, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)
    cos = get_lr("cosine_annealing", 0.1, 10, 4, 0, t_max=4, eta_min=0.0)
    np.testing.assert_allclose(cos[[0, 20, 39]], [0.1, 0.05, 0.05 * (1 + math.cos(math.pi * 3.9 / 4))],
                               rtol=1e-5)
    warm = get_lr("cosine_annealing", 0.1, 10, 4, 0.5, t_max=0)
    np.testing.assert_allclose(warm[:5], [0.02, 0.04, 0.06, 0.08, 0.1], rtol=1e-5)


def _white_box_image(box):
    img = np.zeros((200, 300, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return img


def _inside_fraction(img, box):
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    inner = img[y1 + 2:y2 - 2, x1 + 2:x2 - 2]
    return (inner > 200).mean()


def test_augmentation_keeps_boxes_on_objects():
    box = (40, 50, 140, 120)
    img = _white_box_image(box)
    boxes = np.array([box], np.float32)
    f_img, f_boxes = hflip(img, boxes)
    np.testing.assert_array_equal(f_boxes[0], [160, 50, 260, 120])
    assert _inside_fraction(f_img, f_boxes[0]) == 1.0
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(10):
        j_img, j_boxes = jitter(img, boxes, 320, rng, 0.3, (0.5, 1.5))
        x1, y1, x2, y2 = np.clip(j_boxes[0], 0, 320)
        assert j_img.shape == (320, 320, 3)
        if x2 - x1 > 8 and y2 - y1 > 8:  # the visible part of the box covers the visible part of the object
            assert _inside_fraction(j_img, (x1, y1, x2, y2)) > 0.95
            checked += 1
        else:  # the box left the image: so did the object
            assert (j_img > 200).all(axis=2).sum() < 8 * 320
    assert checked >= 8
    l_img, l_boxes = letterbox_boxes(img, boxes, 320)
    assert _inside_fraction(l_img, l_boxes[0]) == 1.0
    _, mapping = letterbox(img, 320)
    b = l_boxes[0]
    back = boxes_to_image(np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]]]), mapping)
    np.testing.assert_allclose(back[0], [40, 50, 100, 70], atol=1e-3)


def test_sampler_shards_are_disjoint_cover_and_reshuffle():
    padded = [DistributedSampler(10, 3, r, seed=4).indices(0) for r in range(3)]
    assert all(len(s) == 4 for s in padded)  # 10 items over 3 ranks: padded to 12 by wrapping
    assert set(sum(padded, [])) == set(range(10))
    shards = [DistributedSampler(12, 3, r, seed=4) for r in range(3)]
    e0 = [s.indices(0) for s in shards]
    assert sorted(sum(e0, [])) == list(range(12))  # disjoint and covering
    assert [s.indices(1) for s in shards] != e0
    assert e0 == [s.indices(0) for s in shards]
    assert DistributedSampler(5, shuffle=False).indices(3) == [0, 1, 2, 3, 4]


def test_damaged_image_is_skipped_with_warning(tmp_path):
    from src.data.dataset import BatchSource, CocoTrainSet
    from src.data.synthetic import make_dataset
    make_dataset(str(tmp_path), 4, 0, size=64, min_size=16, max_size=30)
    (tmp_path / "train2017" / "000001.jpg").write_bytes(b"broken")
    data = CocoTrainSet(str(tmp_path / "annotations" / "instances_train2017.json"), str(tmp_path / "train2017"))
    cfg = load_config(["--config_path", TINY_CFG, "--num_classes", "3", "--per_batch_size", "4",
                       "--training_shape", "64"])
    source = BatchSource(data, [0, 1, 2, 3], cfg, ModelSpec.from_config(cfg), epoch=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = source[0]
    assert any("000001.jpg" in str(w.message) for w in caught)
    assert batch[0].shape == (4, 3, 64, 64) and len(batch) == 4
    again = BatchSource(data, [0, 1, 2, 3], cfg, ModelSpec.from_config(cfg), epoch=0)[0]
    for a, b in zip(batch, again):
        np.testing.assert_array_equal(a, b)  # seeded: the same batch twice
    assert cv2.imread(str(tmp_path / "train2017" / "000000.jpg")) is not None


def test_run_source_chains_the_epochs_from_any_step(tmp_path):
    from src.data.dataset import BatchSource, CocoTrainSet, RunSource
    from src.data.synthetic import make_dataset
    make_dataset(str(tmp_path), 5, 0, size=64, min_size=16, max_size=30)
    data = CocoTrainSet(str(tmp_path / "annotations" / "instances_train2017.json"), str(tmp_path / "train2017"))
    cfg = load_config(["--config_path", TINY_CFG, "--num_classes", "3", "--per_batch_size", "2",
                       "--training_shape", "64"])
    sampler = DistributedSampler(len(data), seed=3)
    spec = ModelSpec.from_config(cfg)
    run = RunSource(data, sampler, cfg, spec, 3, 7)  # 2 batches an epoch: epoch 1 batch 1 to epoch 3 batch 0
    assert len(run) == 4 and len(RunSource(data, sampler, cfg, spec, 7, 6)) == 0
    for k, (epoch, b) in enumerate([(1, 1), (2, 0), (2, 1), (3, 0)]):
        expected = BatchSource(data, sampler.indices(epoch), cfg, spec, epoch)[b]
        for got, want in zip(run[k], expected):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(run[1][0], run[3][0])  # another epoch: another order and augmentation

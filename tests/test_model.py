"""Model structure and the box decode, against the paper's formulas in numpy."""
import numpy as np
import mindspore as ms
import pytest

from conftest import MBV2_CFG, TINY_CFG
from model_utils.config import load_config
from src.models.spec import ModelSpec
from src.models.yolo import build_network
from src.models.yolo_head import YoloDecode

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", jit_config={"jit_level": "O0"})


@pytest.mark.parametrize("argv, convs, params", [
    ([], 75, 62001757),
    (["--model_name", "yolov3_darknet53_spp"], 76, 63052381),
    (["--config_path", TINY_CFG], 13, 8858734),
])
def test_darknet_layer_count_and_size(argv, convs, params):
    """Conv layers and parameter counts as in the darknet cfgs (weights file sizes / 4)."""
    net = build_network(ModelSpec.from_config(load_config(argv)))
    layers = net.darknet_layers()
    assert len(layers) == convs
    n = sum(int(np.prod(c.weight.shape)) + (4 if bn is not None else 1) * c.weight.shape[0] for c, bn in layers)
    assert n == params


def test_any_class_count_and_output_shapes():
    cfg = load_config(["--config_path", TINY_CFG, "--num_classes", "3"])
    net = build_network(ModelSpec.from_config(cfg))
    net.set_train(False)
    outs = net(ms.Tensor(np.zeros((2, 3, 320, 320), np.float32)))
    assert [tuple(o.shape) for o in outs] == [(2, 24, 10, 10), (2, 24, 20, 20)]


def test_decode_matches_paper_formulas():
    rng = np.random.default_rng(1)
    anchors = [[10, 14], [23, 27], [37, 58], [81, 82]]
    mask = [[2, 3], [0, 1]]
    c = 3
    maps = [rng.normal(0, 1, (1, 2 * (5 + c), h, h)).astype(np.float32) for h in (2, 4)]
    rows = YoloDecode(anchors, mask, c)([ms.Tensor(m) for m in maps], 64, 64).asnumpy()
    assert rows.shape == (1, 2 * 2 * 2 + 4 * 4 * 2, 5 + c)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    k = 0
    for m, idx in zip(maps, mask):
        h = m.shape[2]
        p = m[0].reshape(2, 5 + c, h, h)
        for y in range(h):
            for x in range(h):
                for a in range(2):
                    t = p[a, :, y, x]
                    want = [(sig(t[0]) + x) * 64 / h, (sig(t[1]) + y) * 64 / h,
                            np.exp(t[2]) * anchors[idx[a]][0], np.exp(t[3]) * anchors[idx[a]][1],
                            sig(t[4]), *sig(t[5:])]
                    np.testing.assert_allclose(rows[0, k], want, rtol=1e-5, atol=1e-5)
                    k += 1


def test_bad_anchor_mask_is_an_error():
    from src.errors import UserError
    with pytest.raises(UserError, match="output scales"):
        build_network(ModelSpec.from_config(load_config(["--anchor_mask", "[[0,1,2],[3,4,5]]"])))
    with pytest.raises(UserError, match="outside anchor_scales"):
        build_network(ModelSpec.from_config(load_config(["--config_path", TINY_CFG,
                                                         "--anchor_mask", "[[3,4,9],[0,1,2]]"])))


def test_hub_entry_point():
    from mindspore_hub_conf import create_network
    net = create_network("yolov3_tiny", num_classes=3)
    assert len(net.darknet_layers()) == 13 and net.head1.conv.out_channels == 24
    model = create_network("yolov3_tiny", with_decode=True)
    model.set_train(False)
    assert model(ms.Tensor(np.zeros((1, 3, 64, 64), np.float32))).shape == (1, 2 * 2 * 3 + 4 * 4 * 3, 85)
    from src.errors import UserError
    with pytest.raises(UserError, match="unknown network 'yolov5'; choose one of yolov3_darknet53, "):
        create_network("yolov5")


def test_mobilenetv2_variant_shapes_and_size():
    """mmdetection's yolov3_mobilenetv2: three scales, 96-channel heads, 3.33 M parameters
    (mmdetection lists 3.74 M, which includes MobileNetV2's unused 1280-channel last conv: 320*1280 + BN)."""
    from src.errors import UserError
    cfg = load_config(["--config_path", MBV2_CFG, "--num_classes", "3"])
    net = build_network(ModelSpec.from_config(cfg))
    net.set_train(False)
    outs = net(ms.Tensor(np.zeros((1, 3, 320, 320), np.float32)))
    assert [tuple(o.shape) for o in outs] == [(1, 24, 10, 10), (1, 24, 20, 20), (1, 24, 40, 40)]
    assert net.block1.head.conv.in_channels == 96 and net.block3.conv_out.conv.in_channels == 96
    coco = build_network(ModelSpec.from_config(load_config(["--config_path", MBV2_CFG])))
    n = sum(int(np.prod(p.shape)) for p in coco.trainable_params())
    assert abs(n + 320 * 1280 + 2 * 1280 - 3.74e6) < 0.01e6
    with pytest.raises(UserError, match="no darknet counterpart"):
        coco.darknet_layers()


def randomize_bn(net, rng: np.random.Generator, low: float, high: float) -> None:
    """BN statistics and affine parameters away from the identity, so that folding them is tested."""
    for name, p in net.parameters_and_names():
        if name.endswith(("moving_mean", "beta")):
            p.set_data(ms.Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))
        if name.endswith(("moving_variance", "gamma")):
            p.set_data(ms.Tensor(rng.uniform(low, high, p.shape).astype(np.float32)))


@pytest.mark.parametrize("config", [TINY_CFG, MBV2_CFG])
def test_folding_batchnorm_keeps_the_outputs(config):
    """Inference folds BN into the convs: same raw outputs (to float rounding) as the BN graph."""
    from src.models.layers import fold_batchnorm
    cfg = load_config(["--config_path", config, "--num_classes", "3"])
    rng = np.random.default_rng(0)
    net = build_network(ModelSpec.from_config(cfg))
    randomize_bn(net, rng, 0.5, 1.5)
    net.set_train(False)
    x = ms.Tensor(rng.uniform(0, 1, (1, 3, 128, 128)).astype(np.float32))
    before = [o.asnumpy() for o in net(x)]
    folded = build_network(ModelSpec.from_config(cfg))
    ms.load_param_into_net(folded, dict(net.parameters_and_names()))
    folded.set_train(False)
    folded = fold_batchnorm(folded)
    after = [o.asnumpy() for o in folded(x)]
    for a, b in zip(before, after):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    convs = [c for _, c in folded.cells_and_names() if hasattr(c, "folded")]
    assert convs and all(c.folded and c.conv.has_bias for c in convs)


@pytest.mark.parametrize("config", [TINY_CFG, MBV2_CFG, None])
def test_cpu_inference_kernels_keep_the_outputs(config):
    """eval and predict on the CPU run every folded conv (bias, leaky ReLU) and the 2x2 max-pools as
    src.cpu.cpu_kernels ops (DarkNet-53's stages and the YOLO blocks as one op each): the same raw outputs as
    MindSpore's ops, to 1e-5 of their range."""
    from src.cpu.routing import use_cpu_inference_kernels
    from src.models.darknet import Stage
    from src.models.layers import ConvBN, HeadConv, fold_batchnorm
    from src.models.yolo import YoloBlock
    cfg = load_config((["--config_path", config] if config else []) + ["--num_classes", "3"])
    rng = np.random.default_rng(1)
    stock = build_network(ModelSpec.from_config(cfg))
    randomize_bn(stock, rng, 0.5, 1.5)
    fast = build_network(ModelSpec.from_config(cfg))
    ms.load_param_into_net(fast, dict(stock.parameters_and_names()))
    x = ms.Tensor(rng.uniform(0, 1, (2, 3, 128, 128)).astype(np.float32))
    for net in (stock, fast):
        net.set_train(False)
        fold_batchnorm(net)
    assert use_cpu_inference_kernels(fast) > 0
    fused = {id(inner) for _, cell in fast.cells_and_names() if isinstance(cell, (Stage, YoloBlock)) and cell.kernel
             for _, inner in cell.cells_and_names()}
    assert bool(fused) == (config != TINY_CFG)  # yolov3's five stages and both's three YOLO blocks
    for _, cell in fast.cells_and_names():
        if isinstance(cell, (HeadConv, ConvBN)):  # every convolution, strided and depthwise ones too
            assert cell.kernel is not None or id(cell) in fused
    for a, b in zip(stock(x), fast(x)):
        a, b = a.asnumpy(), b.asnumpy()
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())


def test_mobilenetv2_exports_to_onnx(tmp_path):
    """export.py's ONNX of the MobileNetV2 variant (BN folded) in ONNX Runtime = the MindSpore graph."""
    import onnxruntime as ort
    from conftest import run_script
    from src.formats.checkpoint import network_parameters, save_checkpoint
    from src.models.yolo_head import DetectionModel
    cfg = load_config(["--config_path", MBV2_CFG, "--num_classes", "3"])
    rng = np.random.default_rng(5)
    net = build_network(ModelSpec.from_config(cfg))
    randomize_bn(net, rng, 0.3, 0.6)  # small scales keep the activations finite
    ckpt = str(tmp_path / "mbv2.ckpt")
    save_checkpoint(network_parameters(net), ckpt)
    run_script("export.py", "--config_path", MBV2_CFG, "--num_classes", "3", "--ckpt_file", ckpt, "--file_name",
               str(tmp_path / "mbv2"), "--file_format", "ONNX", "--testing_shape", "224")
    x = rng.uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)
    net.set_train(False)
    ours = DetectionModel(net, YoloDecode(cfg.anchor_scales, cfg.anchor_mask, 3))(ms.Tensor(x)).asnumpy()
    theirs = ort.InferenceSession(str(tmp_path / "mbv2.onnx"), providers=["CPUExecutionProvider"]).run(None, {
        "images": x})[0]
    assert theirs.shape == (1, 3 * (7 * 7 + 14 * 14 + 28 * 28), 8)
    ours[..., :4] /= 224
    theirs[..., :4] /= 224
    assert np.isfinite(ours).all() and ours[..., 4].std() > 1e-3
    assert np.abs(ours - theirs).max() <= 1e-4


def test_input_centering_subtracts_each_images_mean_colour_and_exports(tmp_path):
    """input_centering: the network on x = the same network without it on x minus each image's mean colour, in
    training, in inference with the CPU kernels, and in the exported ONNX."""
    import onnxruntime as ort
    from conftest import run_script
    from src.formats.checkpoint import network_parameters, save_checkpoint
    from src.cpu.routing import use_cpu_inference_kernels
    from src.models.layers import fold_batchnorm
    from src.models.yolo_head import DetectionModel
    rng = np.random.default_rng(6)
    plain_cfg = load_config(["--config_path", TINY_CFG, "--num_classes", "3"])
    centred_cfg = load_config(["--config_path", TINY_CFG, "--num_classes", "3", "--input_centering", "True"])
    plain = build_network(ModelSpec.from_config(plain_cfg))
    centred = build_network(ModelSpec.from_config(centred_cfg))
    randomize_bn(plain, rng, 0.5, 1.5)
    ms.load_param_into_net(centred, dict(plain.parameters_and_names()))
    x = rng.uniform(0, 1, (2, 3, 128, 128)).astype(np.float32) + np.array([0.3, -0.2, 0.1], np.float32)[:, None, None]
    shifted = x - x.mean((2, 3), keepdims=True)
    for train in (True, False):
        plain.set_train(train)
        centred.set_train(train)
        for a, b in zip(plain(ms.Tensor(shifted)), centred(ms.Tensor(x))):
            np.testing.assert_allclose(b.asnumpy(), a.asnumpy(), rtol=1e-4, atol=1e-4 * np.abs(a.asnumpy()).max())
    ckpt = str(tmp_path / "centred.ckpt")
    save_checkpoint(network_parameters(centred), ckpt, {"input_centering": 1})
    run_script("export.py", "--config_path", TINY_CFG, "--num_classes", "3", "--ckpt_file", ckpt, "--file_name",
               str(tmp_path / "centred"), "--file_format", "ONNX", "--testing_shape", "128", "--batch_size", "2")
    onnx_out = ort.InferenceSession(str(tmp_path / "centred.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": x})[0]
    for net in (plain, centred):
        fold_batchnorm(net)
    assert use_cpu_inference_kernels(centred) > 0
    decode = YoloDecode(plain_cfg.anchor_scales, plain_cfg.anchor_mask, 3)
    expected = DetectionModel(plain, decode)(ms.Tensor(shifted)).asnumpy()
    fast = DetectionModel(centred, decode)(ms.Tensor(x)).asnumpy()
    for out in (fast, onnx_out):
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())

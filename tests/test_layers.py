"""The faster forms of layers (CPU kernels, rewritten activations): the same numbers as MindSpore's own ops,
forward and backward, and a clean fallback without a compiler."""
import os

import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor, nn

from src.models.spec import ModelSpec
from src.cpu import cpu_kernels
from src.cpu.routing import use_cpu_inference_kernels, use_cpu_training_kernels
from src.models.darknet import Stage
from src.models.layers import ConvBN, ConvBNLeaky, HeadConv, LeakyReLU, MaxPool
from src.models.yolo import YoloBlock

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", jit_config={"jit_level": "O0"})


class Weighted(nn.Cell):
    """sum(f(x) * w): its gradient wrt x is f's backward applied to w."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def construct(self, x, w):
        return (self.f(x) * w).sum()


def forward_and_grad(cell: nn.Cell, x: np.ndarray, w: np.ndarray):
    grad_fn = ms.value_and_grad(Weighted(cell), grad_position=0)
    _, dx = grad_fn(Tensor(x), Tensor(w))
    return cell(Tensor(x)).asnumpy(), dx.asnumpy()


def numpy_pool_and_grad(x: np.ndarray, w: np.ndarray):
    """2x2 stride-2 max-pool and its gradient, ties to the first maximum in row-major order."""
    n, c, h, wd = x.shape
    oh, ow = h // 2, wd // 2
    win = x[:, :, :2 * oh, :2 * ow].reshape(n, c, oh, 2, ow, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, oh, ow, 4)
    first = win.argmax(-1)
    dx = np.zeros_like(x)
    for k in range(4):
        sel = (first == k) * w
        dx[:, :, k // 2:2 * oh:2, k % 2:2 * ow:2] += sel
    return win.max(-1), dx


@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (1, 4, 7, 9), (1, 2, 7, 37)])
def test_maxpool_kernel_matches_mindspore(shape):
    assert cpu_kernels.enabled(), "g++ is needed for this test (the fallback has its own test)"
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[0], shape[1], shape[2] // 2, shape[3] // 2)).astype(np.float32)
    pool = MaxPool(2, 2)
    assert use_cpu_training_kernels(pool) == 1 and pool.kernel is not None
    pool.set_train(True)
    y_kernel, dx_kernel = forward_and_grad(pool, x, w)
    pool.set_train(False)
    y_stock, dx_stock = forward_and_grad(pool, x, w)
    np.testing.assert_array_equal(y_kernel, y_stock)
    np.testing.assert_array_equal(dx_kernel, dx_stock)
    y_ref, dx_ref = numpy_pool_and_grad(x, w)
    np.testing.assert_array_equal(y_kernel, y_ref)
    np.testing.assert_array_equal(dx_kernel, dx_ref)


def test_stride1_maxpool_kernel_matches_mindspore():
    x = Tensor(np.random.default_rng(6).standard_normal((2, 5, 7, 9)).astype(np.float32))
    stock, fast = MaxPool(2, 1), MaxPool(2, 1)
    fast.set_train(True)
    with pytest.raises(ValueError, match="inference mode"):
        use_cpu_inference_kernels(fast)
    stock.set_train(False)
    fast.set_train(False)
    assert use_cpu_inference_kernels(fast) == 1 and fast.kernel is not None
    y = fast(x).asnumpy()
    np.testing.assert_array_equal(y, stock(x).asnumpy())
    padded = np.pad(x.asnumpy(), ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=-np.inf)
    windows = [padded[:, :, a:a + 7, b:b + 9] for a in (0, 1) for b in (0, 1)]
    np.testing.assert_array_equal(y, np.max(windows, axis=0))


def numpy_stride1_pool_grad(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Gradient of darknet's 2x2 stride-1 max-pool: each window's to its first maximum in row-major order."""
    n, c, h, wd = x.shape
    dx = np.zeros_like(x)
    for i in range(h):
        for j in range(wd):
            cells = [(i, j), (i, min(j + 1, wd - 1)), (min(i + 1, h - 1), j), (min(i + 1, h - 1), min(j + 1, wd - 1))]
            values = np.stack([x[:, :, a, b] for a, b in cells], -1)
            first = values.argmax(-1)
            for k, (a, b) in enumerate(cells):
                dx[:, :, a, b] += np.where(first == k, w[:, :, i, j], 0)
    return dx


@pytest.mark.parametrize("tied", [False, True])
def test_stride1_maxpool_training_kernel_matches_mindspore(tied):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 5, 7, 9)).astype(np.float32)
    if tied:
        x = np.round(x)  # many windows with several maxima
    w = rng.standard_normal(x.shape).astype(np.float32)
    fast = MaxPool(2, 1)
    assert use_cpu_training_kernels(fast) == 1 and fast.kernel is not None
    results = [forward_and_grad(pool, x, w) for pool in (MaxPool(2, 1), fast)]
    np.testing.assert_array_equal(results[1][0], results[0][0])
    np.testing.assert_allclose(results[1][1], numpy_stride1_pool_grad(x, w), rtol=1e-6, atol=1e-6)
    if not tied:
        np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-6, atol=1e-6)


def test_maxpool_kernel_gives_a_tied_window_one_gradient():
    x = np.random.default_rng(1).integers(0, 2, (2, 2, 6, 38)).astype(np.float32)  # 19 windows a row: 8 + 8 + 3
    w = np.ones((2, 2, 3, 19), np.float32)
    pool = MaxPool(2, 2)
    assert use_cpu_training_kernels(pool) == 1
    pool.set_train(True)
    _, dx = forward_and_grad(pool, x, w)
    _, dx_ref = numpy_pool_and_grad(x, w)
    np.testing.assert_array_equal(dx, dx_ref)
    assert dx.sum() == w.sum()


def test_training_leaky_relu_is_the_same_function():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    w = rng.standard_normal(x.shape).astype(np.float32)
    act = LeakyReLU()
    act.set_train(True)
    y_train, dx_train = forward_and_grad(act, x, w)
    act.set_train(False)
    y_infer, dx_infer = forward_and_grad(act, x, w)
    np.testing.assert_allclose(y_train, np.where(x > 0, x, 0.1 * x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y_train, y_infer, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx_train, np.where(x > 0, w, 0.1 * w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx_train, dx_infer, rtol=1e-6, atol=1e-7)


def fold_random(cell: ConvBN, seed: int) -> ConvBN:
    """The ConvBN with random weights and BN statistics, BN folded for inference."""
    rng = np.random.default_rng(seed)
    shape = cell.conv.weight.shape
    cell.conv.weight.set_data(Tensor(rng.standard_normal(shape).astype(np.float32) / np.sqrt(np.prod(shape[1:]))))
    for name, lo, hi in (("gamma", 0.5, 1.5), ("beta", -0.5, 0.5), ("moving_mean", -0.5, 0.5),
                         ("moving_variance", 0.5, 2.0)):
        getattr(cell.bn, name).set_data(Tensor(rng.uniform(lo, hi, shape[0]).astype(np.float32)))
    cell.fold_bn()
    cell.set_train(False)
    return cell


def folded_conv(c: int, o: int, k: int, leaky: bool, seed: int, stride: int = 1, groups: int = 1) -> ConvBN:
    """A ConvBN with random weights and BN statistics, BN folded for inference."""
    return fold_random(ConvBN(c, o, k, stride, groups, LeakyReLU() if leaky else None), seed)


# (x shape, out channels, kernel, stride): the direct path (3 input channels, a partial 16-column block), the
# row-block path (small weights; out channels not a multiple of 4 too), the large-weight path for one image
# (3x3, and a 1x1 that multiplies x itself) and for several images side by side; Winograd for one image,
# for three images of odd height and width (tiles cut at the edges), and for more tiles than one chunk
# holds (chunks and runs starting inside a tile row); stride 2 on RGB (MobileNetV2's stem), on the row-block
# path, and on both large-weight paths with odd sizes.
CONV_CASES = [((2, 3, 20, 36), 8, 3, 1), ((1, 3, 16, 16), 6, 3, 1), ((2, 16, 24, 20), 32, 3, 1),
              ((1, 64, 13, 13), 256, 3, 1), ((1, 256, 7, 9), 512, 1, 1), ((3, 64, 10, 10), 256, 3, 1),
              ((1, 32, 26, 26), 64, 3, 1), ((3, 64, 13, 11), 72, 3, 1), ((1, 32, 130, 130), 32, 3, 1),
              ((2, 3, 20, 36), 32, 3, 2), ((2, 16, 24, 20), 32, 3, 2), ((1, 64, 13, 11), 256, 3, 2),
              ((3, 128, 9, 12), 256, 3, 2)]


def check_inference_kernel(stock: ConvBN, fast: ConvBN, x: Tensor, leaky: bool) -> None:
    assert use_cpu_inference_kernels(fast) == 1 and fast.kernel is not None
    y_stock, y_fast = stock(x).asnumpy(), fast(x).asnumpy()
    assert y_fast.shape == y_stock.shape
    np.testing.assert_allclose(y_fast, y_stock, rtol=1e-5, atol=1e-5)
    if leaky:
        assert (y_stock < 0).any()


@pytest.mark.parametrize("shape,out,k,stride", CONV_CASES)
@pytest.mark.parametrize("leaky", [True, False])
def test_inference_conv_kernel_matches_mindspore(shape, out, k, stride, leaky):
    assert cpu_kernels.enabled(), "g++ is needed for this test (the fallback has its own test)"
    x = Tensor(np.random.default_rng(3).standard_normal(shape).astype(np.float32))
    stock, fast = (folded_conv(shape[1], out, k, leaky, 4, stride) for _ in range(2))
    check_inference_kernel(stock, fast, x, leaky)
    assert fast(x).shape == (shape[0], out, (shape[2] - 1) // stride + 1, (shape[3] - 1) // stride + 1)


@pytest.mark.parametrize("shape,stride", [((2, 24, 20, 18), 1), ((1, 32, 13, 11), 2), ((2, 16, 8, 10), 2),
                                          ((1, 8, 1, 3), 2)])
@pytest.mark.parametrize("leaky", [True, False])
def test_inference_depthwise_kernel_matches_mindspore(shape, stride, leaky):
    """MobileNetV2's 3x3 depthwise convolutions (even and odd sizes, stride 1 and 2, a map one row high)."""
    assert cpu_kernels.enabled(), "g++ is needed for this test (the fallback has its own test)"
    c = shape[1]
    x = Tensor(np.random.default_rng(5).standard_normal(shape).astype(np.float32))
    stock, fast = (folded_conv(c, c, 3, leaky, 6, stride, groups=c) for _ in range(2))
    check_inference_kernel(stock, fast, x, leaky)


def folded_stage(channels: int, depth: int, seed: int) -> Stage:
    stage = Stage(channels, depth)
    for i, conv in enumerate(stage_convs_of(stage)):
        fold_random(conv, seed + i)
    stage.set_train(False)
    return stage


def stage_convs_of(stage: Stage) -> list:
    return [cell for _, cell in stage.cells_and_names() if isinstance(cell, ConvBN)]


@pytest.mark.parametrize("shape,depth", [((2, 32, 52, 52), 2), ((1, 64, 27, 25), 1)])
def test_inference_darknet_stage_kernel_matches_its_layers(shape, depth):
    """A DarkNet-53 stage (stride-2 conv, residual blocks; odd sizes too) as one op: MindSpore's numbers to 1e-5, and
    to the bit its convolutions on their own kernels with MindSpore's sums, in fp32 and (where the CPU has it) in
    bf16, where on AMX the stage stays in oneDNN's NHWC between its convolutions."""
    from src.cpu import precision
    assert cpu_kernels.enabled(), "g++ is needed for this test (the fallback has its own test)"
    x = Tensor(np.random.default_rng(7).standard_normal(shape).astype(np.float32))
    stock, fused, apart = (folded_stage(shape[1], depth, 8) for _ in range(3))
    assert use_cpu_inference_kernels(fused) == 1 and fused.kernel is not None
    assert all(use_cpu_inference_kernels(conv) == 1 for conv in stage_convs_of(apart)) and apart.kernel is None
    np.testing.assert_allclose(fused(x).asnumpy(), stock(x).asnumpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fused(x).asnumpy(), apart(x).asnumpy())
    if precision.has_bf16(precision.kernels_isa()):
        precision.set_precision("bf16")
        try:
            y_fused, y_apart = fused(x).asnumpy(), apart(x).asnumpy()
            routes = []
            for cell in stage_convs_of(fused):
                n, c, h, w = shape if cell is stage_convs_of(fused)[0] else (shape[0], 2 * shape[1],
                                                                            (shape[2] + 1) // 2, (shape[3] + 1) // 2)
                routes.append(cpu_kernels.conv_route((n, cell.conv.in_channels, h, w), cell.conv.weight.shape,
                                                     cell.conv.stride[0])[0])
        finally:
            precision.set_precision("fp32")
        np.testing.assert_array_equal(y_fused, y_apart)
        assert np.abs(y_fused - stock(x).asnumpy()).max() < 0.1  # bf16 operands, not fp32's numbers
        if precision.has_amx(precision.kernels_isa()):  # every convolution on oneDNN: the NHWC path ran
            assert all(name is not None and "amx" in name for name in routes), routes


def folded_yolo_block(c: int, mid: int, out: int, seed: int) -> YoloBlock:
    block = YoloBlock(c, mid, out, 3, 16)
    for i, conv in enumerate(cell for _, cell in block.cells_and_names() if isinstance(cell, ConvBN)):
        fold_random(conv, seed + i)
    rng = np.random.default_rng(seed)
    block.head.conv.weight.set_data(Tensor(rng.standard_normal((out, mid * 2, 1, 1)).astype(np.float32) * 0.05))
    block.set_train(False)
    return block


@pytest.mark.parametrize("shape", [(2, 96, 26, 26), (1, 64, 13, 11)])
def test_inference_yolo_block_kernel_matches_its_layers(shape):
    """A YOLO block (five convs to the route, the 3x3 and the head's 1x1) as one op with its two outputs: MindSpore's
    numbers to 1e-5, and to the bit its layers on their own kernels, in fp32 and (where the CPU has it) in bf16,
    where on AMX the block stays in oneDNN's NHWC between its convolutions."""
    from src.cpu import precision
    assert cpu_kernels.enabled(), "g++ is needed for this test (the fallback has its own test)"
    x = Tensor(np.random.default_rng(9).standard_normal(shape).astype(np.float32))
    stock, fused, apart = (folded_yolo_block(shape[1], 32, 24, 10) for _ in range(3))
    assert use_cpu_inference_kernels(fused) == 1 and fused.kernel is not None
    layers = [cell for _, cell in apart.cells_and_names() if isinstance(cell, (ConvBN, HeadConv))]
    assert len(layers) == 7 and all(use_cpu_inference_kernels(cell) == 1 for cell in layers)

    def outputs(block):
        return [y.asnumpy() for y in block(x)]

    for y_fused, y_stock, y_apart in zip(outputs(fused), outputs(stock), outputs(apart)):
        np.testing.assert_allclose(y_fused, y_stock, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(y_fused, y_apart)
    if precision.has_bf16(precision.kernels_isa()):
        precision.set_precision("bf16")
        try:
            pairs = list(zip(outputs(fused), outputs(apart)))
            routes = [cpu_kernels.conv_route((shape[0], cell.conv.in_channels, shape[2], shape[3]),
                                             cell.conv.weight.shape, 1)[0] for cell in layers]
        finally:
            precision.set_precision("fp32")
        for y_fused, y_apart in pairs:
            np.testing.assert_array_equal(y_fused, y_apart)
        if precision.has_amx(precision.kernels_isa()):  # every convolution on oneDNN: the NHWC path ran
            assert all(name is not None and "amx" in name for name in routes), routes


def assert_training_kernels_match(make_cell, weight: Tensor, x: np.ndarray, w: np.ndarray, atol: float) -> None:
    """A training ConvBN (BN on batch statistics) with its convolution and BN on the kernels against the stock one:
    forward, input gradient and weight gradient."""
    results = []
    for kernels in (False, True):
        cell = make_cell()
        cell.conv.weight.set_data(weight)
        if kernels:
            assert use_cpu_training_kernels(cell) == 2 and cell.conv_kernel is not None and cell.bn_kernel is not None
        cell.set_train(True)
        grad_fn = ms.value_and_grad(Weighted(cell), grad_position=0, weights=[cell.conv.weight])
        _, (dx, (dw,)) = grad_fn(Tensor(x), Tensor(w))
        results.append((cell(Tensor(x)).asnumpy(), dx.asnumpy(), dw.asnumpy()))
    for stock, fast in zip(*results):
        np.testing.assert_allclose(fast, stock, rtol=1e-5, atol=atol * np.abs(stock).max())


# (x shape, out channels, kernel, stride): Winograd forward and both gradients (one chunk; odd sizes, tiles cut
# at the edges; two chunks, the weight gradient summed over them), then few tiles (the im2col paths) on a
# non-square map; the narrow first layer on RGB, a 1x1, and stride 2 on even and odd sizes (the input gradient
# scattered back from the columns).
TRAIN_CONV_CASES = [((2, 32, 20, 20), 48, 3, 1), ((3, 40, 13, 11), 32, 3, 1), ((1, 32, 130, 130), 32, 3, 1),
                    ((1, 32, 9, 7), 40, 3, 1), ((2, 48, 6, 16), 64, 3, 1), ((2, 3, 20, 24), 16, 3, 1),
                    ((2, 32, 10, 10), 16, 1, 1), ((2, 16, 12, 10), 32, 3, 2), ((1, 8, 9, 7), 16, 3, 2),
                    ((3, 64, 13, 13), 128, 3, 2)]


@pytest.mark.parametrize("shape,out,k,stride", TRAIN_CONV_CASES)
def test_training_conv_kernel_matches_mindspore(shape, out, k, stride):
    """Forward, input gradient and weight gradient of a training ConvBNLeaky (BN on batch statistics)."""
    assert cpu_kernels.enabled(), "g++ is needed for this test (the fallback has its own test)"
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    out_shape = (shape[0], out, (shape[2] - 1) // stride + 1, (shape[3] - 1) // stride + 1)
    w = rng.standard_normal(out_shape).astype(np.float32)
    weight = Tensor(rng.standard_normal((out, shape[1], k, k)).astype(np.float32) / np.sqrt(shape[1] * k * k))
    assert_training_kernels_match(lambda: ConvBNLeaky(shape[1], out, k, stride), weight, x, w, 1e-6)


@pytest.mark.parametrize("shape,out", [((2, 64, 13, 13), 255), ((3, 40, 26, 20), 24)])
def test_training_head_kernel_matches_mindspore(shape, out):
    """A head's 1x1 output conv with its bias: forward and the input, weight and bias gradients."""
    assert cpu_kernels.enabled(), "g++ is needed for this test (the fallback has its own test)"
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[0], out) + shape[2:]).astype(np.float32)
    results = []
    for kernels in (False, True):
        head = HeadConv(shape[1], out, 3, 16)
        head.conv.weight.set_data(Tensor(rng.standard_normal((out, shape[1], 1, 1)).astype(np.float32) * 0.1)
                                  if not results else Tensor(results[0][-1]))
        if kernels:
            assert use_cpu_training_kernels(head) == 1 and head.train_kernel is not None
        head.set_train(True)
        grad_fn = ms.value_and_grad(Weighted(head), grad_position=0, weights=[head.conv.weight, head.conv.bias])
        _, (dx, (dw, db)) = grad_fn(Tensor(x), Tensor(w))
        results.append((head(Tensor(x)).asnumpy(), dx.asnumpy(), dw.asnumpy(), db.asnumpy(),
                        head.conv.weight.asnumpy()))
    for stock, fast in zip(*results):
        np.testing.assert_allclose(fast, stock, rtol=1e-5, atol=1e-6 * np.abs(stock).max())


# (x shape, offset of the values, leaky ReLU after BN, tolerance): maps of many sizes, and the linear BN of
# MobileNetV2's projections on values whose mean is about 150 times their spread: float32 itself leaves the two
# implementations about 1e-5 apart there (a variance taken as E[x^2] - E[x]^2 in float would be off by 1e-3), and
# without the ReLU's kink (a value that rounds to either side of 0 takes another slope).
BN_CASES = [((4, 16, 26, 26), 0.0, True, 2e-5), ((2, 5, 7, 9), 0.0, True, 2e-5), ((2, 12, 13, 13), 0.0, False, 2e-5),
            ((3, 8, 33, 31), 300.0, False, 1e-4)]


@pytest.mark.parametrize("shape,offset,leaky,tol", BN_CASES)
def test_training_batchnorm_kernel_matches_mindspore(shape, offset, leaky, tol):
    """BN on batch statistics + activation: output, gradients of x, gamma and beta, and the moving averages after
    two steps, against MindSpore's BatchNorm and LeakyReLU."""
    assert cpu_kernels.enabled(), "g++ is needed for this test (the fallback has its own test)"
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 2 + offset).astype(np.float32)
    out = shape[1] + 3
    w = rng.standard_normal((shape[0], out) + shape[2:]).astype(np.float32)
    weight = Tensor(rng.standard_normal((out, shape[1], 1, 1)).astype(np.float32))
    gamma = Tensor(rng.uniform(0.5, 1.5, out).astype(np.float32))
    results = []
    for kernels in (False, True):
        cell = ConvBN(shape[1], out, 1, act=LeakyReLU() if leaky else None)
        cell.conv.weight.set_data(weight)
        cell.bn.gamma.set_data(gamma)
        if kernels:
            cell.bn_kernel = cpu_kernels.batchnorm_act()
        cell.set_train(True)
        grad_fn = ms.value_and_grad(Weighted(cell), grad_position=0, weights=[cell.bn.gamma, cell.bn.beta])
        y, (dx, (dgamma, dbeta)) = grad_fn(Tensor(x), Tensor(w))
        y = cell(Tensor(x)).asnumpy()
        results.append((y, dx.asnumpy(), dgamma.asnumpy(), dbeta.asnumpy(), cell.bn.moving_mean.asnumpy(),
                        cell.bn.moving_variance.asnumpy()))
    for stock, fast in zip(*results):
        np.testing.assert_allclose(fast, stock, rtol=tol, atol=tol / 10 * np.abs(stock).max())


@pytest.mark.parametrize("shape,stride", [((2, 16, 13, 11), 1), ((3, 24, 20, 20), 2), ((2, 32, 9, 7), 2),
                                          ((1, 8, 1, 5), 1)])
def test_training_depthwise_kernel_matches_mindspore(shape, stride):
    """MobileNetV2's depthwise 3x3 ConvBN in training: forward, input and weight gradients (even and odd sizes)."""
    assert cpu_kernels.enabled(), "g++ is needed for this test (the fallback has its own test)"
    rng = np.random.default_rng(11)
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[0], c, (shape[2] - 1) // stride + 1, (shape[3] - 1) // stride + 1)).astype(
        np.float32)
    weight = Tensor(rng.standard_normal((c, 1, 3, 3)).astype(np.float32) / 3)
    assert_training_kernels_match(lambda: ConvBN(c, c, 3, stride, groups=c, act=LeakyReLU()), weight, x, w, 1e-5)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty kernel cache, and library() forgetting what it built before and after the test."""
    monkeypatch.setenv("YOLO_CACHE_DIR", str(tmp_path))
    cpu_kernels.library.cache_clear()
    yield tmp_path
    cpu_kernels.library.cache_clear()


def test_without_a_compiler_the_stock_ops_are_used(cache, monkeypatch):
    monkeypatch.setattr(cpu_kernels.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="g\\+\\+ not found"):
        assert cpu_kernels.library() is None
    assert not cpu_kernels.enabled()
    pool = MaxPool(2, 2)
    assert use_cpu_training_kernels(pool) == 0 and pool.kernel is None
    conv = folded_conv(8, 8, 3, True, 0)
    assert use_cpu_inference_kernels(conv) == 0 and conv.kernel is None
    assert os.listdir(cache) == []


def test_kernel_library_is_built_once_into_the_cache(cache):
    path = cpu_kernels.library()
    assert path is not None and path.startswith(str(cache)) and os.path.getsize(path) > 0
    files = sorted(os.listdir(os.path.dirname(path)))  # the library and its private copy of MindSpore's libdnnl
    assert len(files) == 2 and os.path.basename(path) in files and any(f.startswith("libdnnl-") for f in files)
    cpu_kernels.library.cache_clear()
    mtime = os.path.getmtime(path)
    assert cpu_kernels.library() == path and os.path.getmtime(path) == mtime


def test_an_unwritable_cache_falls_back_with_a_warning(cache, monkeypatch):
    blocker = cache / "not_a_dir"
    blocker.write_text("")
    monkeypatch.setenv("YOLO_CACHE_DIR", str(blocker))
    with pytest.warns(UserWarning, match="cannot build the CPU kernels"):
        assert cpu_kernels.library() is None


def test_building_a_network_builds_no_kernels(cache):
    from conftest import TINY_CFG
    from model_utils.config import load_config
    from src.models.yolo import build_network
    network = build_network(ModelSpec.from_config(load_config(["--config_path", TINY_CFG])))
    assert not any(isinstance(c, MaxPool) and c.kernel is not None for _, c in network.cells_and_names())
    assert not (cache / "kernels").exists()  # building a network for inference compiles nothing
    # the tiny trunk shares one stride-2 max-pool cell and has darknet's stride-1 one; all eleven ConvBNLeaky cells
    # get a convolution and a BN kernel, the two heads one each
    assert use_cpu_training_kernels(network) == 26
    assert len(os.listdir(cache / "kernels")) == 2

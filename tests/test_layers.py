"""The training path's faster forms of layers (CPU kernels, rewritten activations): the same numbers as the
inference ops, forward and backward, and a clean fallback without a compiler."""
import os

import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor, nn

from src import cpu_kernels
from src.layers import LeakyReLU, MaxPool, use_cpu_training_kernels

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


@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (1, 4, 7, 9)])
def test_maxpool_kernel_matches_mindspore(shape):
    assert cpu_kernels.enabled(), "g++ is needed for this test (the fallback has its own test)"
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[0], shape[1], shape[2] // 2, shape[3] // 2)).astype(np.float32)
    pool = MaxPool(2, 2)
    assert use_cpu_training_kernels(pool) == 1 and pool.use_kernel
    pool.set_train(True)
    y_kernel, dx_kernel = forward_and_grad(pool, x, w)
    pool.set_train(False)
    y_stock, dx_stock = forward_and_grad(pool, x, w)
    np.testing.assert_array_equal(y_kernel, y_stock)
    np.testing.assert_array_equal(dx_kernel, dx_stock)
    y_ref, dx_ref = numpy_pool_and_grad(x, w)
    np.testing.assert_array_equal(y_kernel, y_ref)
    np.testing.assert_array_equal(dx_kernel, dx_ref)


def test_maxpool_kernel_gives_a_tied_window_one_gradient():
    x = np.random.default_rng(1).integers(0, 2, (2, 2, 6, 6)).astype(np.float32)
    w = np.ones((2, 2, 3, 3), np.float32)
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
    assert use_cpu_training_kernels(pool) == 0 and not pool.use_kernel
    assert os.listdir(cache) == []


def test_kernel_library_is_built_once_into_the_cache(cache):
    path = cpu_kernels.library()
    assert path is not None and path.startswith(str(cache)) and os.path.getsize(path) > 0
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]
    cpu_kernels.library.cache_clear()
    mtime = os.path.getmtime(path)
    assert cpu_kernels.library() == path and os.path.getmtime(path) == mtime


def test_an_unwritable_cache_falls_back_with_a_warning(cache, monkeypatch):
    blocker = cache / "not_a_dir"
    blocker.write_text("")
    monkeypatch.setenv("YOLO_CACHE_DIR", str(blocker))
    with pytest.warns(UserWarning, match="cannot build the CPU kernels"):
        assert cpu_kernels.library() is None


def test_only_training_builds_the_kernels(cache):
    from conftest import TINY_CFG
    from model_utils.config import load_config
    from src.yolo import build_network
    network = build_network(load_config(["--config_path", TINY_CFG]))
    assert not any(isinstance(c, MaxPool) and c.use_kernel for _, c in network.cells_and_names())
    assert not (cache / "kernels").exists()  # building a network for inference compiles nothing
    assert use_cpu_training_kernels(network) == 1  # the tiny trunk shares one stride-2 max-pool cell
    assert len(os.listdir(cache / "kernels")) == 1

"""precision bf16: the CPU kernels' products in bf16 stay close to fp32, train deterministically and keep the static
loss scale exact; auto follows the CPU; an explicit bf16 where the CPU cannot is one clear error."""
import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor, nn, ops

from conftest import TINY_CFG
from model_utils.config import load_config
from src.cpu import cpu_kernels, precision
from src.cpu.routing import use_cpu_inference_kernels, use_cpu_training_kernels
from src.data.targets import build_targets
from src.engine import precision_timing
from src.engine.detector import build_detection_model
from src.engine.loss import YoloWithLoss
from src.engine.train_step import make_train_step
from src.errors import UserError
from src.models.spec import ModelSpec
from src.models.yolo import build_network
from test_layers import folded_conv

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", jit_config={"jit_level": "O0"})
AVX2, AVX512_CORE, AVX512_CORE_BF16, AMX = 0x7, 0x27, 0xE7, 0x3EF


@pytest.fixture
def bf16():
    """bf16 products for the test, fp32 again after it; skips where the CPU has no bf16 arithmetic."""
    if not precision.has_bf16(precision.kernels_isa()):
        pytest.skip("this CPU (or the kernels' oneDNN) has no bf16 arithmetic (AVX512-BF16 or AMX-BF16)")
    precision.set_precision("bf16")
    yield
    precision.set_precision("fp32")


@pytest.mark.parametrize("isa, speedup, auto, bf16_runs", [
    (AVX2, 0.0, "fp32", False), (AVX512_CORE, 0.0, "fp32", False), (AVX512_CORE_BF16, 0.5, "fp32", True),
    (AVX512_CORE_BF16, 1.95, "bf16", True), (AMX, 0.5, "bf16", True), (0, 0.0, "fp32", False)])
def test_auto_follows_the_cpu_and_bf16_without_it_is_an_error(monkeypatch, isa, speedup, auto, bf16_runs):
    """auto: bf16 with AMX, and with AVX512-BF16 alone where its gemm measures faster than fp32's by the margin
    (2x on an AMD EPYC, 0.5x on an Intel Xeon without AMX); an explicit bf16 runs wherever the CPU has bf16 dot
    products."""
    monkeypatch.setattr(precision, "kernels_isa", lambda: isa)
    monkeypatch.setattr(precision, "measured_bf16_speedup", lambda: speedup)
    chosen, why = precision.choose("auto")
    assert chosen == auto
    if isa == AVX512_CORE_BF16:
        assert f"bf16 gemm measured {speedup:.2f}x the fp32 sgemm's rate" in why
    assert precision.choose("fp32") == ("fp32", "asked for")
    if bf16_runs:
        assert precision.choose("bf16")[0] == "bf16"
        return
    with pytest.raises(UserError, match="precision bf16 needs a CPU with AVX512-BF16 or AMX-BF16") as e:
        precision.choose("bf16")
    assert "\n" not in str(e.value)


def test_auto_measures_once_per_cpu_and_kernel_build(monkeypatch, tmp_path):
    """The ratio is measured on the first call and kept beside the kernels (a resume and every rank choose alike);
    an unreadable file is measured again."""
    calls = []
    monkeypatch.setattr(precision.cpu_kernels, "library", lambda: str(tmp_path / "cpu_kernels-abc.so"))
    monkeypatch.setattr(precision.matmul_peaks, "bf16_speedup", lambda: calls.append(1) or 1.9)
    assert precision.measured_bf16_speedup() == precision.measured_bf16_speedup() == 1.9 and len(calls) == 1
    kept = tmp_path / "cpu_kernels-abc.bf16_speedup.json"
    assert kept.exists()
    kept.write_text("{")
    assert precision.measured_bf16_speedup() == 1.9 and len(calls) == 2


def test_bf16_speedup_measures_this_cpu():
    """The measurement auto reads: positive where the kernels built, and bf16 not faster than fp32 where the CPU has
    no bf16 dot products (oneDNN then emulates it)."""
    from src.cpu import matmul_peaks
    speedup = matmul_peaks.bf16_speedup(rounds=1, n=256)
    assert speedup > 0
    if not precision.has_bf16(precision.kernels_isa()):
        assert speedup < precision.AUTO_BF16_SPEEDUP


def test_bf16_forward_close_to_fp32(tiny_ckpt, sample_blob):
    """The converted yolov3-tiny on a sample image: bf16 differs from fp32 (it ran), by little."""
    _, model = build_detection_model(load_config(["--config_path", TINY_CFG]), tiny_ckpt)
    assert use_cpu_inference_kernels(model) > 0
    x = Tensor(np.load(sample_blob))
    fp32 = model(x).asnumpy()
    if not precision.has_bf16(precision.kernels_isa()):
        pytest.skip("this CPU (or the kernels' oneDNN) has no bf16 arithmetic (AVX512-BF16 or AMX-BF16)")
    precision.set_precision("bf16")
    try:
        bf16 = model(x).asnumpy()
    finally:
        precision.set_precision("fp32")
    assert not np.array_equal(bf16, fp32)
    boxes, scores = fp32[..., :4], fp32[..., 4:]
    np.testing.assert_allclose(bf16[..., :4], boxes, rtol=0, atol=0.02 * np.abs(boxes).max())
    np.testing.assert_allclose(bf16[..., 4:], scores, rtol=0, atol=0.05)


def _batch():
    rng = np.random.default_rng(0)
    cfg = load_config(["--config_path", TINY_CFG])
    targets = [build_targets(np.array([[10.0, 12.0, 40.0, 50.0]]), np.array([i]), 64, cfg.anchor_scales,
                             cfg.anchor_mask, 2, 4) for i in (0, 1)]
    images = Tensor(rng.uniform(0, 1, (2, 3, 64, 64)).astype(np.float32))
    return [images] + [Tensor(np.stack([t[i] for t in targets])) for i in range(len(targets[0]))]


def _step(loss_scale: float, batch):
    """The weights after one momentum step of yolov3-tiny (2 classes, the CPU kernels) from seed 5, and the loss."""
    ms.set_seed(5)
    cfg = load_config(["--config_path", TINY_CFG, "--num_classes", "2"])
    net = build_network(ModelSpec.from_config(cfg))
    assert use_cpu_training_kernels(net) > 0
    step = make_train_step(YoloWithLoss(net, cfg.anchor_scales, cfg.anchor_mask, 2, 0.7),
                           nn.Momentum(net.trainable_params(), 0.01, 0.9), loss_scale)
    step.set_train(True)
    loss, overflow, _ = step(*batch)
    assert not overflow.asnumpy()
    return {n: p.asnumpy().copy() for n, p in net.parameters_and_names()}, float(loss.asnumpy())


def test_bf16_step_is_deterministic_and_loss_scale_exact(bf16):
    """Loss scale 1024 and 1 give the same update to the bit: a power of two commutes with every rounding of the
    step, the one to bf16 too, so any difference would be the step's own non-determinism or a scale not undone."""
    batch = _batch()
    scaled, loss = _step(1024.0, batch)
    unscaled, loss1 = _step(1.0, batch)
    assert loss == loss1
    for name in scaled:
        np.testing.assert_array_equal(scaled[name], unscaled[name], err_msg=name)


# (x shape, out channels, kernel, stride, passes on oneDNN without AMX): in bf16 the RGB layer runs its gradients
# on oneDNN's primitives (its forward stays the direct form, in fp32), a narrow 3x3 every pass, a stride-2 layer its
# forward and input gradient, a 1x1 to few channels its input gradient (odd sizes: the padding on the bottom and
# right); the rest stays on the hand-written forms. With AMX oneDNN runs every pass but the RGB layer's forward.
ONEDNN_CASES = [((2, 3, 20, 24), 16, 3, 1, 2), ((1, 16, 19, 21), 32, 3, 1, 3), ((2, 16, 13, 11), 48, 3, 2, 2),
                ((2, 64, 26, 26), 32, 1, 1, 1)]


class WeightedConv(nn.Cell):
    """sum(conv(x, weight) * g) through a kernel op, or MindSpore's fp32 Conv2D (padding k // 2) without one."""

    def __init__(self, kernel, out: int, k: int, stride: int):
        super().__init__()
        self.kernel = kernel
        self.stock = ops.Conv2D(out, k, pad_mode="pad", pad=k // 2, stride=stride)

    def construct(self, x, weight, g):
        y = self.stock(x, weight) if self.kernel is None else self.kernel(x, weight)
        return (y * g).sum()


@pytest.mark.parametrize("shape,out,k,stride,passes", ONEDNN_CASES)
def test_bf16_onednn_convolutions_match_mindspore(bf16, shape, out, k, stride, passes):
    """The passes that bf16 runs on oneDNN's convolution primitives (none a reference kernel) against MindSpore's
    fp32 ops, within bf16's rounding: the forward with bias and leaky ReLU (inference), and the training
    convolution's input and weight gradients."""
    routes = cpu_kernels.conv_route(shape, (out, shape[1], k, k), stride)
    if precision.has_amx(precision.kernels_isa()):
        passes = 2 if shape[1] == 3 else 3
    assert sum(r is not None for r in routes) == passes, routes
    assert not any("ref" in r for r in routes if r), routes
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape).astype(np.float32)
    stock, fast = (folded_conv(shape[1], out, k, True, 12, stride) for _ in range(2))
    y_stock = stock(Tensor(x)).asnumpy()
    assert use_cpu_inference_kernels(fast) == 1
    np.testing.assert_allclose(fast(Tensor(x)).asnumpy(), y_stock, rtol=0, atol=0.01 * np.abs(y_stock).max())
    g = Tensor(rng.standard_normal(y_stock.shape).astype(np.float32))
    weight = Tensor((rng.standard_normal((out, shape[1], k, k)) / np.sqrt(shape[1] * k * k)).astype(np.float32))
    grads = [ms.value_and_grad(WeightedConv(kernel, out, k, stride), grad_position=(0, 1))(Tensor(x), weight, g)[1]
             for kernel in (None, cpu_kernels.conv(stride))]
    for reference, result in zip(*grads):
        reference = reference.asnumpy()
        np.testing.assert_allclose(result.asnumpy(), reference, rtol=0, atol=0.01 * np.abs(reference).max())


def test_fp32_runs_the_hand_written_convolutions():
    """In fp32 the hand-written forms measured as fast or faster on every layer: no pass goes to oneDNN."""
    for shape, out, k, stride, _ in ONEDNN_CASES:
        assert cpu_kernels.conv_route(shape, (out, shape[1], k, k), stride) == [None] * 3


@pytest.mark.parametrize("isa, speedup, auto", [(AVX512_CORE_BF16, 1.3, "bf16"), (AVX512_CORE_BF16, 0.9, "fp32"),
                                                (AMX, 0.9, "fp32"), (AMX, 2.4, "bf16"), (AVX2, 3.0, "fp32")])
def test_auto_takes_the_precision_the_network_runs_faster_in(monkeypatch, isa, speedup, auto):
    """auto with the run's workload timed: bf16 where it measured faster, whatever the gemm or AMX say; not timed
    where the CPU has no bf16 arithmetic, nor for an explicit precision."""
    calls = []
    network = (lambda: calls.append(1) or speedup, "yolov3_tiny training step at batch 8, 416")
    monkeypatch.setattr(precision, "kernels_isa", lambda: isa)
    monkeypatch.setattr(precision, "measured_bf16_speedup", lambda: 2.0)
    chosen, why = precision.choose("auto", network)
    assert chosen == auto
    if isa == AVX2:
        assert not calls
        return
    assert why.startswith(f"auto: yolov3_tiny training step at batch 8, 416 measured {speedup:.2f}x as fast in bf16")
    assert precision.choose("fp32", network)[0] == "fp32" and precision.choose("bf16", network)[0] == "bf16"
    assert len(calls) == 1


def test_network_times_are_measured_once_per_workload(monkeypatch, tmp_path):
    """Kept beside the kernels per model, kind, batch and size (a resume and every rank choose alike); an unreadable
    file is measured again."""
    calls = []
    monkeypatch.setattr(cpu_kernels, "library", lambda: str(tmp_path / "cpu_kernels-abc.so"))
    monkeypatch.setattr(precision_timing, "measure_in_child",
                        lambda config, kind, batch, size: calls.append((kind, batch, size)) or {"fp32": 2.0, "bf16": 1.0})
    config = load_config(["--config_path", TINY_CFG])
    speedup, what = precision_timing.measure_speedup(config, "train", 8, 416)
    assert speedup() == speedup() == 2.0 and what == "yolov3_tiny training step at batch 8, 416"
    assert precision_timing.measure_speedup(config, "train", 4, 416)[0]() == 2.0
    assert calls == [("train", 8, 416), ("train", 4, 416)]
    (tmp_path / "cpu_kernels-abc.network_times.json").write_text("{")
    assert speedup() == 2.0 and len(calls) == 3


def test_network_timing_runs_the_configured_step_in_both_precisions():
    """The child process times a real training step of the configured model (toy size) in fp32 and in bf16."""
    times = precision_timing.measure_in_child(load_config(["--config_path", TINY_CFG]), "train", 2, 64)
    assert set(times) == {"fp32", "bf16"} and all(0 < t < 60 for t in times.values())

"""Building blocks shared by the backbones and heads, with darknet's semantics."""
import math
from typing import Optional

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

# darknet normalises with eps 1e-6 (OpenCV's importer too); converted weights expect it.
BN_EPS = 1e-6
BN_MOMENTUM = 0.9


class LeakyReLU(nn.Cell):
    """Leaky ReLU with darknet's slope 0.1.

    While training it is written as 0.1x + 0.9 relu(x), the same function and
    faster on the CPU (docs/performance.md). Inference and export keep the single
    LeakyReLU op.
    """

    SLOPE = 0.1

    def __init__(self):
        super().__init__()
        self.act = nn.LeakyReLU(self.SLOPE)

    def construct(self, x):
        if self.training:
            return 0.1 * x + 0.9 * ops.relu(x)
        return self.act(x)


class ConvBN(nn.Cell):
    """Conv without bias, BN, then an optional activation; groups=in_channels makes it depthwise.

    `fold_bn()` merges the BN statistics into the conv's weight and a bias for
    inference: one op fewer per layer, the same numbers to rounding. On the CPU
    src.cpu.routing may then give it `kernel`: conv, bias and leaky ReLU in one
    op; for training, it may give it `conv_kernel`, the convolution alone (with
    its gradients), and `bn_kernel`, BN on the batch's statistics and the
    activation in one op (the moving averages are then updated here, as
    MindSpore's BatchNorm does).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 act: Optional[nn.Cell] = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad_mode="pad",
                              padding=kernel_size // 2, group=groups, has_bias=False, weight_init="HeUniform")
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = act
        self.folded = False
        self.kernel = None
        self.conv_kernel = None
        self.bn_kernel = None
        self.center_input = False
        slope = 1.0 if act is None else LeakyReLU.SLOPE
        self.bn_settings = Tensor(np.array([BN_EPS, slope], np.float32))

    def construct(self, x):
        if self.center_input:
            x = x - x.mean((2, 3), keep_dims=True)
        if self.kernel is not None:
            return self.kernel(x, self.conv.weight, self.conv.bias)
        if self.conv_kernel is not None:
            x = self.conv_kernel(x, self.conv.weight)
        else:
            x = self.conv(x)
        if self.bn_kernel is not None and self.training:
            x, mean, var = self.bn_kernel(x, self.bn.gamma, self.bn.beta, self.bn_settings)
            self.update_moving_averages(ops.stop_gradient(mean), ops.stop_gradient(var), x.size / x.shape[1])
            return x
        if not self.folded:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x

    def kernel_params(self):
        """After fold_bn(): the conv's weight and bias, as the inference kernels take them."""
        return self.conv.weight, self.conv.bias

    def update_moving_averages(self, mean, var, count):
        """MindSpore's BatchNorm update (nn.BatchNorm2d keeps 1 - its momentum argument as `momentum`): moving =
        (1 - m) * moving + m * batch, the variance unbiased."""
        bn = self.bn
        ops.assign(bn.moving_mean, bn.moving_mean * (1 - bn.momentum) + mean * bn.momentum)
        unbiased = var * (count / (count - 1))
        ops.assign(bn.moving_variance, bn.moving_variance * (1 - bn.momentum) + unbiased * bn.momentum)

    def fold_bn(self) -> None:
        bn = self.bn
        scale = bn.gamma.asnumpy() / np.sqrt(bn.moving_variance.asnumpy() + bn.eps)
        weight = self.conv.weight.asnumpy() * scale.reshape(-1, 1, 1, 1)
        bias = bn.beta.asnumpy() - bn.moving_mean.asnumpy() * scale
        self.conv.weight.set_data(Tensor(weight.astype(np.float32)))
        self.conv.bias = Parameter(Tensor(bias.astype(np.float32)), name="bias", requires_grad=False)
        self.conv.has_bias = True
        self.folded = True


class ConvBNLeaky(ConvBN):
    """darknet [convolutional] with batch_normalize=1, activation=leaky (slope 0.1), 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, act=LeakyReLU())


def center_input(network: nn.Cell, on: bool) -> None:
    """input_centering: the layer on the image subtracts each image's mean colour first.

    Without it, images of near-uniform colour differ mostly by that colour, which then dominates the first
    layers' features and their BN statistics; shapes drawn close to their background's colour were hardly learned
    from scratch without it (docs/training.md). darknet's models see raw pixels."""
    first = [cell for _, cell in network.cells_and_names() if isinstance(cell, ConvBN) and cell.conv.in_channels == 3]
    if len(first) != 1:
        raise ValueError(f"expected one convolution on the image, found {len(first)}")
    first[0].center_input = on


def fold_batchnorm(network: nn.Cell) -> nn.Cell:
    """Fold every ConvBN's BN into its conv, for inference only (the network can no longer train).

    Call it before the network first runs: a graph already compiled would keep its BN ops."""
    for _, cell in network.cells_and_names():
        if isinstance(cell, ConvBN) and not cell.folded:
            cell.fold_bn()
    for name, param in network.parameters_and_names():
        param.name = name
    return network


class HeadConv(nn.Cell):
    """darknet's last [convolutional] before [yolo]: 1x1, bias, linear.

    Biases start at priors (as in the focal-loss paper and ultralytics) so that
    training from scratch does not spend its first steps pulling every
    objectness down from 0.5: objectness ~ 8 objects per 640x640 image at this
    stride, class probability ~ 0.6 / num_classes.
    """

    def __init__(self, in_channels: int, out_channels: int, num_anchors: int = 0, stride: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, has_bias=True, weight_init="HeUniform")
        self.bias_prior(num_anchors, stride)
        self.kernel = None
        self.train_kernel = None

    def bias_prior(self, num_anchors: int, stride: int) -> None:
        if not num_anchors:
            return
        per_anchor = self.conv.out_channels // num_anchors
        bias = np.zeros((num_anchors, per_anchor), np.float32)
        bias[:, 4] = math.log(8 / (640 / stride) ** 2)
        bias[:, 5:] = math.log(0.6 / max(per_anchor - 5 - 0.99, 0.01))
        self.conv.bias.set_data(Tensor(bias.reshape(-1)))

    def construct(self, x):
        if self.kernel is not None:
            return self.kernel(x, self.conv.weight, self.conv.bias)
        if self.train_kernel is not None and self.training:
            return self.train_kernel(x, self.conv.weight, self.conv.bias)
        return self.conv(x)

    def kernel_params(self):
        """The conv's weight and bias, as the inference kernels take them."""
        return self.conv.weight, self.conv.bias


class Upsample2x(nn.Cell):
    """Nearest-neighbour x2 upsampling, written as reshape + broadcast so it exports to ONNX."""

    def construct(self, x):
        n, c, h, w = x.shape
        x = x.reshape(n, c, h, 1, w, 1)
        x = ops.broadcast_to(x, (n, c, h, 2, w, 2))
        return x.reshape(n, c, h * 2, w * 2)


class MaxPool(nn.Cell):
    """darknet [maxpool]: size k, stride s, padding k-1 split as darknet does (-inf, never picked)."""

    def __init__(self, size: int, stride: int):
        super().__init__()
        self.size = size
        self.stride = stride
        if size % 2 == 1 and stride == 1:
            self.pool = nn.MaxPool2d(size, 1, pad_mode="same")
        else:
            self.pool = nn.MaxPool2d(size, stride, pad_mode="valid")
        self.kernel = None

    def construct(self, x):
        if self.kernel is not None:
            return self.kernel(x)
        if self.size == 2 and self.stride == 1:
            # darknet pads one column/row on the right/bottom; repeating the last one
            # gives the same maximum as -inf padding.
            x = ops.concat((x, x[:, :, :, -1:]), 3)
            x = ops.concat((x, x[:, :, -1:, :]), 2)
        return self.pool(x)

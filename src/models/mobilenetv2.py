"""MobileNetV2 backbone (Sandler et al., 2018) as mmdetection's YOLOv3-MobileNetV2 uses it.

Width 1.0, stages (expand ratio, channels, blocks, stride) from the paper,
and, as mmdetection configures it for YOLOv3, leaky ReLU (0.1) in place of
ReLU6; returns the outputs of stages 3, 5 and 7: strides 8, 16 and 32 with
32, 96 and 320 channels.
"""
from typing import Tuple

from mindspore import nn

from src.models.layers import ConvBN, LeakyReLU

STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                activate: bool = True) -> ConvBN:
    return ConvBN(in_channels, out_channels, kernel_size, stride, groups, LeakyReLU() if activate else None)


class InvertedResidual(nn.Cell):
    """1x1 expansion, 3x3 depthwise, linear 1x1 projection; identity shortcut when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        layers = [conv_bn_act(in_channels, hidden, 1)] if expand_ratio != 1 else []
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
                   conv_bn_act(hidden, out_channels, 1, activate=False)]
        self.block = nn.SequentialCell(layers)
        self.residual = stride == 1 and in_channels == out_channels

    def construct(self, x):
        if self.residual:
            return x + self.block(x)
        return self.block(x)


class MobileNetV2(nn.Cell):
    """Returns the feature maps at strides 8, 16 and 32 (32, 96, 320 channels)."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 32, 3, stride=2)
        stages = []
        channels = 32
        for expand, out_channels, blocks, stride in STAGES:
            cells = []
            for i in range(blocks):
                cells.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1, expand))
                channels = out_channels
            stages.append(nn.SequentialCell(cells))
        self.stages = nn.CellList(stages)
        self.out_channels: Tuple[int, int, int] = (32, 96, 320)

    def construct(self, x):
        x = self.stem(x)
        x = self.stages[1](self.stages[0](x))
        c3 = self.stages[2](x)
        c4 = self.stages[4](self.stages[3](c3))
        c5 = self.stages[6](self.stages[5](c4))
        return c3, c4, c5

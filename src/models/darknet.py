"""Backbones: DarkNet-53 (yolov3.cfg layers 0-74) and the yolov3-tiny trunk."""
from typing import List, Sequence, Tuple

from mindspore import nn

from src.models.layers import ConvBNLeaky, MaxPool


class ResidualBlock(nn.Cell):
    """1x1 conv to half the channels, 3x3 conv back, plus the input ([shortcut] from=-3)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvBNLeaky(channels, channels // 2, 1)
        self.conv2 = ConvBNLeaky(channels // 2, channels, 3)

    def construct(self, x):
        return x + self.conv2(self.conv1(x))

    def kernel_params(self):
        return self.conv1.kernel_params() + self.conv2.kernel_params()


class Stage(nn.SequentialCell):
    """A stride-2 3x3 conv doubling the channels, then residual blocks.

    On the CPU, src.cpu.routing may give a BN-folded stage `kernel`: the whole stage in one op, on its convs'
    weights and biases in order."""

    def __init__(self, channels: int, depth: int):
        super().__init__([ConvBNLeaky(channels, channels * 2, 3, stride=2)]
                         + [ResidualBlock(channels * 2) for _ in range(depth)])
        self.kernel = None

    def construct(self, x):
        if self.kernel is not None:
            params = ()
            for cell in self.cell_list:
                params = params + cell.kernel_params()
            return self.kernel(x, *params)
        for cell in self.cell_list:
            x = cell(x)
        return x


class DarkNet53(nn.Cell):
    """Returns the feature maps at strides 8, 16 and 32 (256, 512, 1024 channels)."""

    def __init__(self, layers: Sequence[int] = (1, 2, 8, 8, 4)):
        super().__init__()
        if len(layers) != 5:
            raise ValueError("backbone_layers needs 5 stage depths")
        self.conv0 = ConvBNLeaky(3, 32, 3)
        stages = []
        channels = 32
        for depth in layers:
            stages.append(Stage(channels, depth))
            channels *= 2
        self.layer1, self.layer2, self.layer3, self.layer4, self.layer5 = stages
        self.out_channels = (256, 512, 1024)

    def construct(self, x):
        x = self.layer2(self.layer1(self.conv0(x)))
        c3 = self.layer3(x)
        c4 = self.layer4(c3)
        c5 = self.layer5(c4)
        return c3, c4, c5


class TinyDarkNet(nn.Cell):
    """yolov3-tiny.cfg layers 0-12: six conv+maxpool pairs, then a 1024-channel conv.

    Returns the stride-16 map (layer 8, 256 channels) and the stride-32 map (1024).
    """

    def __init__(self):
        super().__init__()
        widths = (16, 32, 64, 128, 256)
        self.convs = nn.CellList([ConvBNLeaky(c_in, c_out, 3) for c_in, c_out in zip((3,) + widths[:-1], widths)])
        self.pool = MaxPool(2, 2)
        self.conv5 = ConvBNLeaky(256, 512, 3)
        self.pool5 = MaxPool(2, 1)
        self.conv6 = ConvBNLeaky(512, 1024, 3)
        self.out_channels = (256, 1024)

    def construct(self, x):
        for i in range(4):
            x = self.pool(self.convs[i](x))
        c4 = self.convs[4](x)
        x = self.conv5(self.pool(c4))
        c5 = self.conv6(self.pool5(x))
        return c4, c5


def conv_cells(cell: nn.Cell) -> List[Tuple[nn.Conv2d, nn.Cell]]:
    """(conv, bn) pairs of every ConvBNLeaky in a cell, in definition order."""
    return [(c.conv, c.bn) for _, c in cell.cells_and_names() if isinstance(c, ConvBNLeaky)]

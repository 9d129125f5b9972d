"""YOLOv3 networks: DarkNet-53 with three heads, its SPP variant, YOLOv3-tiny and the MobileNetV2 variant.

Each network returns its raw head maps in darknet cfg order (coarsest scale
first), each shaped (N, A*(5+C), H, W), and lists its convolutions in cfg order
(`darknet_layers`) so that darknet .weights files map onto it one to one.
"""
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from mindspore import nn, ops

from src.errors import UserError
from src.models.darknet import DarkNet53, TinyDarkNet, conv_cells
from src.models.layers import ConvBNLeaky, HeadConv, MaxPool, Upsample2x, center_input
from src.models.mobilenetv2 import MobileNetV2
from src.models.spec import ModelSpec

ConvPair = Tuple[nn.Conv2d, Optional[nn.Cell]]


class SPP(nn.Cell):
    """Max-pools of 5, 9 and 13 at stride 1, concatenated as [13, 9, 5, input] (yolov3-spp.cfg)."""

    def __init__(self):
        super().__init__()
        self.pool5 = MaxPool(5, 1)
        self.pool9 = MaxPool(9, 1)
        self.pool13 = MaxPool(13, 1)

    def construct(self, x):
        return ops.concat((self.pool13(x), self.pool9(x), self.pool5(x), x), 1)


class YoloBlock(nn.Cell):
    """The five (SPP: six) alternating 1x1/3x3 convs of a head, then 3x3 and the 1x1 output conv.

    Returns the route feature (input of the next lateral conv) and the raw head map. On the CPU, src.cpu.routing may
    give a BN-folded block without SPP `kernel`: the whole block in one op, on its convs' weights and biases in order.
    """

    def __init__(self, in_channels: int, mid: int, out_channels: int, num_anchors: int, stride: int,
                 spp: bool = False, head_channels: int = 0):
        super().__init__()
        head_channels = head_channels or mid * 2
        self.pre = nn.SequentialCell([ConvBNLeaky(in_channels, mid, 1), ConvBNLeaky(mid, mid * 2, 3),
                                      ConvBNLeaky(mid * 2, mid, 1)])
        self.use_spp = spp
        if spp:
            self.spp = SPP()
            self.spp_conv = ConvBNLeaky(mid * 4, mid, 1)
        self.post = nn.SequentialCell([ConvBNLeaky(mid, mid * 2, 3), ConvBNLeaky(mid * 2, mid, 1)])
        self.conv_out = ConvBNLeaky(mid, head_channels, 3)
        self.head = HeadConv(head_channels, out_channels, num_anchors, stride)
        self.kernel = None

    def construct(self, x):
        if self.kernel is not None:
            params = ()
            for cell in self.pre.cell_list:
                params = params + cell.kernel_params()
            for cell in self.post.cell_list:
                params = params + cell.kernel_params()
            return self.kernel(x, *(params + self.conv_out.kernel_params() + self.head.kernel_params()))
        x = self.pre(x)
        if self.use_spp:
            x = self.spp_conv(self.spp(x))
        route = self.post(x)
        return route, self.head(self.conv_out(route))

    def darknet_layers(self) -> List[ConvPair]:
        return conv_cells(self) + [(self.head.conv, None)]


class YOLOv3(nn.Cell):
    """YOLOv3's three-scale neck and heads on a backbone giving stride 8, 16 and 32 maps.

    With DarkNet-53 and the default widths this is yolov3.cfg (with `spp`,
    yolov3-spp.cfg); `widths` are the heads' 1x1 widths, `laterals` the 1x1
    convs before each upsampling, `head_widths` the 3x3 convs before the outputs.
    """

    def __init__(self, backbone: nn.Cell, num_classes: int, anchors_per_scale: Sequence[int],
                 widths: Sequence[int] = (512, 256, 128), laterals: Sequence[int] = (256, 128),
                 head_widths: Sequence[int] = (1024, 512, 256), spp: bool = False):
        super().__init__()
        outs = [a * (5 + num_classes) for a in anchors_per_scale]
        self.backbone = backbone
        c3, c4, c5 = backbone.out_channels
        self.block1 = YoloBlock(c5, widths[0], outs[0], anchors_per_scale[0], 32, spp, head_widths[0])
        self.lateral1 = ConvBNLeaky(widths[0], laterals[0], 1)
        self.block2 = YoloBlock(c4 + laterals[0], widths[1], outs[1], anchors_per_scale[1], 16,
                                head_channels=head_widths[1])
        self.lateral2 = ConvBNLeaky(widths[1], laterals[1], 1)
        self.block3 = YoloBlock(c3 + laterals[1], widths[2], outs[2], anchors_per_scale[2], 8,
                                head_channels=head_widths[2])
        self.upsample = Upsample2x()

    def construct(self, x):
        c3, c4, c5 = self.backbone(x)
        r1, out1 = self.block1(c5)
        r2, out2 = self.block2(ops.concat((self.upsample(self.lateral1(r1)), c4), 1))
        _, out3 = self.block3(ops.concat((self.upsample(self.lateral2(r2)), c3), 1))
        return out1, out2, out3

    def darknet_layers(self) -> List[ConvPair]:
        return (conv_cells(self.backbone) + self.block1.darknet_layers() + conv_cells(self.lateral1)
                + self.block2.darknet_layers() + conv_cells(self.lateral2) + self.block3.darknet_layers())


class YOLOv3Tiny(nn.Cell):
    """yolov3-tiny.cfg: two scales (strides 32 and 16)."""

    def __init__(self, num_classes: int, anchors_per_scale: Sequence[int]):
        super().__init__()
        outs = [a * (5 + num_classes) for a in anchors_per_scale]
        self.backbone = TinyDarkNet()
        self.conv7 = ConvBNLeaky(1024, 256, 1)
        self.conv8 = ConvBNLeaky(256, 512, 3)
        self.head1 = HeadConv(512, outs[0], anchors_per_scale[0], 32)
        self.lateral = ConvBNLeaky(256, 128, 1)
        self.upsample = Upsample2x()
        self.conv9 = ConvBNLeaky(128 + 256, 256, 3)
        self.head2 = HeadConv(256, outs[1], anchors_per_scale[1], 16)

    def construct(self, x):
        c4, c5 = self.backbone(x)
        route = self.conv7(c5)
        out1 = self.head1(self.conv8(route))
        x = ops.concat((self.upsample(self.lateral(route)), c4), 1)
        out2 = self.head2(self.conv9(x))
        return out1, out2

    def darknet_layers(self) -> List[ConvPair]:
        return (conv_cells(self.backbone) + conv_cells(self.conv7) + conv_cells(self.conv8)
                + [(self.head1.conv, None)] + conv_cells(self.lateral) + conv_cells(self.conv9)
                + [(self.head2.conv, None)])


class YOLOv3MobileNetV2(YOLOv3):
    """mmdetection's lightweight YOLOv3: MobileNetV2 backbone, neck and heads 96 channels wide, three scales."""

    def __init__(self, num_classes: int, anchors_per_scale: Sequence[int], width: int = 96):
        super().__init__(MobileNetV2(), num_classes, anchors_per_scale, (width,) * 3, (width,) * 2, (width,) * 3)

    def darknet_layers(self) -> List[ConvPair]:
        raise UserError("yolov3_mobilenetv2 has no darknet counterpart: darknet .weights files cannot be loaded into it")


class Model(NamedTuple):
    """A network the package builds: its constructor (config, anchors per scale), output scales and config file
    (relative to the repository)."""
    build: Callable[..., nn.Cell]
    scales: int
    config_file: str


MODELS: Dict[str, Model] = {
    "yolov3_darknet53": Model(lambda spec, per_scale: YOLOv3(DarkNet53(spec.backbone_layers), spec.num_classes,
                                                              per_scale), 3, "default_config.yaml"),
    "yolov3_darknet53_spp": Model(lambda spec, per_scale: YOLOv3(DarkNet53(spec.backbone_layers), spec.num_classes,
                                                                  per_scale, spp=True), 3, "configs/yolov3_spp.yaml"),
    "yolov3_tiny": Model(lambda spec, per_scale: YOLOv3Tiny(spec.num_classes, per_scale), 2,
                         "configs/yolov3_tiny.yaml"),
    "yolov3_mobilenetv2": Model(lambda spec, per_scale: YOLOv3MobileNetV2(spec.num_classes, per_scale), 3,
                                "configs/yolov3_mobilenetv2.yaml"),
}


def model(name: str) -> Model:
    if name not in MODELS:
        raise UserError(f"unknown model_name {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name]


def build_network(spec: ModelSpec) -> nn.Cell:
    """The network named by spec.model_name, checked against its anchors and masks."""
    name = spec.model_name
    scales = model(name).scales
    masks = spec.anchor_mask
    if len(masks) != scales:
        raise UserError(f"{name} has {scales} output scales but anchor_mask has {len(masks)} entries")
    n_anchors = len(spec.anchor_scales)
    for mask in masks:
        if not mask or any(not 0 <= i < n_anchors for i in mask):
            raise UserError(f"anchor_mask {masks} refers to anchors outside anchor_scales ({n_anchors} anchors)")
    if spec.num_classes < 1:
        raise UserError(f"num_classes must be positive, got {spec.num_classes}")
    network = model(name).build(spec, [len(m) for m in masks])
    center_input(network, spec.input_centering)
    return network

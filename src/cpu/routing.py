"""Which cells of a network run on the CPU kernels (src.cpu.cpu_kernels): the model's layers (src.models.layers)
hold an optional kernel op each; this module decides which get one, for training or for inference."""
import functools

from mindspore import nn

from src.cpu import cpu_kernels
from src.models.darknet import Stage
from src.models.layers import ConvBN, HeadConv, LeakyReLU, MaxPool
from src.models.yolo import YoloBlock


def kernel_conv(cell: nn.Cell) -> bool:
    """A ConvBN whose convolution src.cpu.cpu_kernels runs, forward and both gradients: one group, stride 1 or 2."""
    return isinstance(cell, ConvBN) and cell.conv.group == 1 and cell.conv.stride in ((1, 1), (2, 2))


def depthwise_conv(cell: nn.Cell) -> bool:
    """A ConvBN that is a 3x3 depthwise convolution with stride 1 or 2 (MobileNetV2's)."""
    conv = cell.conv if isinstance(cell, ConvBN) else None
    return conv is not None and conv.group == conv.in_channels == conv.out_channels and conv.group > 1 \
        and conv.kernel_size == (3, 3) and conv.stride in ((1, 1), (2, 2))


def use_cpu_training_kernels(network: nn.Cell) -> int:
    """Route the 2x2 max-pools (stride 2, and darknet's stride 1), the convolutions of one group (stride 1 or 2)
    and MobileNetV2's depthwise ones, the heads' output convolutions with their bias, and every BN with its leaky
    ReLU (or none) through src.cpu.cpu_kernels (on CPU, if it builds): MindSpore's MaxPoolGrad is the slowest op of a
    CPU training step, its convolutions do more multiplications than Winograd's on the wide 3x3 layers, its
    oneDNN runs at AVX2 at most (src/cpu/onednn.py), and its BatchNorm, BatchNormGrad and the leaky ReLU's elementwise
    ops made about fifteen passes over each activation. Returns how many cells use a kernel."""
    cells = [cell for _, cell in network.cells_and_names()]
    pools = [cell for cell in cells if isinstance(cell, MaxPool) and cell.size == 2 and cell.stride in (1, 2)]
    convs = [cell for cell in cells if kernel_conv(cell) or depthwise_conv(cell)]
    norms = [cell for cell in cells if isinstance(cell, ConvBN) and not cell.folded
             and (cell.act is None or isinstance(cell.act, LeakyReLU))]
    heads = [cell for cell in cells if isinstance(cell, HeadConv)]
    if not (pools or convs or norms or heads) or not cpu_kernels.enabled():
        return 0
    for head in heads:
        head.train_kernel = cpu_kernels.conv_bias_training()
    for pool in pools:
        pool.kernel = cpu_kernels.maxpool2x2() if pool.stride == 2 else cpu_kernels.maxpool2x2_stride1()
    for cell in convs:
        make = cpu_kernels.depthwise_training if depthwise_conv(cell) else cpu_kernels.conv
        cell.conv_kernel = make(cell.conv.stride[0])
    for cell in norms:
        cell.bn_kernel = cpu_kernels.batchnorm_act()
    return len(pools) + len(convs) + len(norms) + len(heads)


def use_cpu_inference_kernels(network: nn.Cell) -> int:
    """On the CPU (if the kernels build), run every convolution of a BN-folded network (stride 1 or 2, depthwise
    too), each with its bias and leaky ReLU, DarkNet-53's stages and the YOLO blocks (without SPP) each as one op (in
    bf16 they stay in oneDNN's NHWC between their convolutions), and its 2x2 max-pools as src.cpu.cpu_kernels ops. Inference only
    (these ops have no gradient), and call it after any export from the same network and before its first run.
    Returns how many cells use a kernel."""
    if network.training:
        raise ValueError("use_cpu_inference_kernels needs a network in inference mode (set_train(False))")
    fused = [(cell, cpu_kernels.darknet_stage) for _, cell in network.cells_and_names()
             if isinstance(cell, Stage) and folded_leaky(cell)]
    fused += [(cell, cpu_kernels.yolo_block) for _, cell in network.cells_and_names()
              if isinstance(cell, YoloBlock) and not cell.use_spp and folded_leaky(cell)]
    inside = {id(inner) for cell, _ in fused for _, inner in cell.cells_and_names()}
    chosen = list(fused)
    for _, cell in network.cells_and_names():
        if id(cell) in inside:
            continue
        if isinstance(cell, ConvBN) and cell.folded and (cell.act is None or isinstance(cell.act, LeakyReLU)):
            make = cpu_kernels.depthwise_bias if depthwise_conv(cell) else cpu_kernels.conv_bias
            if depthwise_conv(cell) or kernel_conv(cell):
                chosen.append((cell, functools.partial(make, leaky=cell.act is not None, stride=cell.conv.stride[0])))
        elif isinstance(cell, HeadConv):
            chosen.append((cell, functools.partial(cpu_kernels.conv_bias, leaky=False)))
        elif isinstance(cell, MaxPool) and cell.size == 2 and cell.stride in (1, 2):
            chosen.append((cell, cpu_kernels.maxpool2x2 if cell.stride == 2 else cpu_kernels.maxpool2x2_stride1))
    if not chosen or not cpu_kernels.enabled():
        return 0
    for cell, make_op in chosen:
        cell.kernel = make_op()
    return len(chosen)


def folded_leaky(cell: nn.Cell) -> bool:
    """Every ConvBN of the cell BN-folded, with leaky ReLU and one group (what the fused inference ops run)."""
    return all(conv.folded and isinstance(conv.act, LeakyReLU) and conv.conv.group == 1
               for _, conv in cell.cells_and_names() if isinstance(conv, ConvBN))

"""The training step: MindSpore's static loss scaling (scale the loss, unscale the gradients,
skip the update on overflow)."""
import mindspore as ms
from mindspore import nn


class TrainStep(nn.TrainOneStepWithLossScaleCell):
    """TrainOneStepWithLossScaleCell with a fixed scale; returns (loss, overflow, scale).

    On CPU the base class would check overflow with float-status kernels that
    CPU lacks; there it takes the base class's own IsFinite ("INFNAN") path.
    """

    def __init__(self, net_with_loss: nn.Cell, optimizer: nn.Optimizer, loss_scale: float):
        super().__init__(net_with_loss, optimizer, scale_sense=nn.FixedLossScaleUpdateCell(float(loss_scale)))
        if ms.get_context("device_target") == "CPU":
            self.gpu_target = False
            self.ascend_910a_target = False
            self.ascend_910b_target = True
            self._ascend_check_overflow_mode = "INFNAN_MODE"
            self.enable_allfinite = False

"""The optimiser and the training step: MindSpore's static loss scaling (scale the loss, unscale the
gradients, skip the update on overflow)."""
from typing import Dict, List, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from src.engine.loss import total


def param_groups(network: nn.Cell, weight_decay: float) -> List[Dict]:
    """Weight decay on conv weights only, not on BN parameters and biases."""
    decay, no_decay = [], []
    for p in network.trainable_params():
        (decay if p.name.endswith(".weight") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0},
            {"order_params": network.trainable_params()}]


OPTIMIZER_STATE = ("moments.", "adam_m.", "adam_v.")  # Momentum's and AdamWeightDecay's per-parameter state


def make_optimizer(network: nn.Cell, config, lr: Union[float, np.ndarray]) -> nn.Optimizer:
    """config.optimizer over the network's parameters with the learning rate `lr` (one, or one per step): momentum
    SGD (the model zoo's), or AdamWeightDecay (decoupled weight decay, beta1 = config.momentum), which from
    scratch learns in 30 epochs what SGD needs 60 for (docs/training.md, "SGD's step budget")."""
    groups, rates = param_groups(network, config.weight_decay), Tensor(np.asarray(lr, np.float32))
    if config.optimizer == "adamw":
        return nn.AdamWeightDecay(groups, rates, beta1=config.momentum, beta2=0.999)
    return nn.Momentum(groups, rates, config.momentum)


class TrainStep(nn.TrainOneStepWithLossScaleCell):
    """TrainOneStepWithLossScaleCell with a fixed scale; returns (loss, overflow, scale)."""

    def __init__(self, net_with_loss: nn.Cell, optimizer: nn.Optimizer, loss_scale: float):
        super().__init__(net_with_loss, optimizer, scale_sense=nn.FixedLossScaleUpdateCell(float(loss_scale)))


class CpuTrainStep(TrainStep):
    """The base class checks overflow with float-status kernels that CPU lacks; here the check is:
    the sum of every gradient's sum is finite exactly when no gradient holds an inf or nan (barring
    a float32 overflow of that sum, which would only flag a step as overflowing). One reduction per
    gradient costs far less than the generic path's IsFinite + ReduceAll per gradient."""

    def start_overflow_check(self, pre_cond, compute_input):
        return ms.Tensor([0] * 8, ms.int32), compute_input

    def get_overflow_status(self, status, compute_output):
        flag = ops.cast(ops.logical_not(ops.isfinite(ops.addn([total(g) for g in compute_output]))), ms.float32)
        flag = flag.reshape((1,))
        if self.is_distributed:
            flag = self.allreduce(flag)
        return flag.reshape(()) > 0


def make_train_step(net_with_loss: nn.Cell, optimizer: nn.Optimizer, loss_scale: float) -> TrainStep:
    """The loss-scale step for the configured device."""
    cls = CpuTrainStep if ms.get_context("device_target") == "CPU" else TrainStep
    return cls(net_with_loss, optimizer, loss_scale)

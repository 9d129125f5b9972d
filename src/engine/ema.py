"""Weight averaging: an exponential moving average (EMA) of the network's parameters and BN statistics, as
ultralytics and mindyolo train with. The average, not the last step's weights, is the model that eval during
training, best.ckpt, eval.py, predict.py and export.py use."""
from typing import Dict

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from src.formats.checkpoint import EMA_PREFIX, network_parameters


def ema_decay_at(step: int, decay: float) -> float:
    """The decay after `step` updates: (1 + n) / (10 + n) until it reaches `decay`, so that the average follows the
    weights closely at first and, in a short run, spans about its last tenth (ultralytics ramps it with a 2000-step
    time constant instead, which averages nothing in runs of a few hundred steps)."""
    return min(decay, (1 + step) / (10 + step))


class WeightAverage(nn.Cell):
    """The averages, named `ema.NAME` after the network's parameters; update() after each training step."""

    def __init__(self, network: nn.Cell, decay: float):
        super().__init__()
        params = network_parameters(network)
        self.names = list(params)
        self.decay = decay
        self.weights = ParameterTuple(list(params.values()))
        self.averages = ParameterTuple([Parameter(Tensor(p.asnumpy(), p.dtype), name=EMA_PREFIX + n,
                                                  requires_grad=False) for n, p in params.items()])

    def construct(self, d):
        for average, weight in zip(self.averages, self.weights):
            ops.assign(average, average * d + weight * (1 - d))
        return d

    def update(self, step: int) -> None:
        """Fold the weights after training step `step` (1-based) into the averages."""
        self(Tensor(ema_decay_at(step, self.decay), ms.float32))

    def state(self) -> Dict[str, Parameter]:
        """The averages by their checkpoint names (`ema.NAME`)."""
        return {EMA_PREFIX + n: a for n, a in zip(self.names, self.averages)}

    def model(self) -> Dict[str, Parameter]:
        """The averages by the network's parameter names: the averaged model."""
        return dict(zip(self.names, self.averages))

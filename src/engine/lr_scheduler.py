"""Learning rate per training step: linear warm-up, then exponential steps or cosine annealing."""
import math
from typing import Sequence

import numpy as np


def warmup_lr(lr: float, step: int, warmup_steps: int) -> float:
    return lr * (step + 1) / warmup_steps


def get_lr(scheduler: str, lr: float, steps_per_epoch: int, max_epoch: int, warmup_epochs: float,
           lr_epochs: Sequence[int] = (), lr_gamma: float = 0.1, t_max: int = 0, eta_min: float = 0.0) -> np.ndarray:
    """One value per step of the whole run (max_epoch * steps_per_epoch steps).

    exponential: lr x lr_gamma for every milestone in lr_epochs already reached.
    cosine_annealing: eta_min + (lr - eta_min)(1 + cos(pi * epoch / t_max)) / 2, epoch fractional.
    """
    total = max_epoch * steps_per_epoch
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    out = np.empty(total, np.float32)
    period = t_max or max_epoch
    for step in range(total):
        epoch = step / steps_per_epoch
        if step < warmup_steps:
            out[step] = warmup_lr(lr, step, warmup_steps)
        elif scheduler == "exponential":
            out[step] = lr * lr_gamma ** sum(int(step // steps_per_epoch) >= m for m in lr_epochs)
        elif scheduler == "cosine_annealing":
            out[step] = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * min(epoch, period) / period)) / 2
        else:
            raise ValueError(f"unknown lr_scheduler {scheduler!r}")
    return out

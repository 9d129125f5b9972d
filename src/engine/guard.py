"""Guard rails: a run going badly wrong early says so in the log instead of collapsing silently."""
import math
from typing import Any, Dict, Optional


class RunGuard:
    """Warns, once each, when the val AP falls below half of the AP the pretrained weights started with (eval during
    training from weights), and when an epoch's mean training loss is not finite or more than twice the first
    epoch's. What it compares with is saved in checkpoints (state()) so that a resumed run warns as the run left
    alone would."""

    AP_FRACTION = 0.5
    LOSS_FACTOR = 2.0

    def __init__(self, logger, start_ap: Optional[float] = None, first_loss: Optional[float] = None):
        self.logger = logger
        self.start_ap = start_ap
        self.first_loss = first_loss
        self.warned = set()

    def _warn(self, what: str, message: str, *args) -> None:
        if what not in self.warned:
            self.warned.add(what)
            self.logger.warning(message, *args)

    def check_ap(self, epoch: int, ap: float) -> None:
        if self.start_ap is not None and self.start_ap > 0 and ap < self.AP_FRACTION * self.start_ap:
            self._warn("ap", "epoch[%d]: val AP %.6f is below half of the %.6f the weights started with: this recipe "
                             "is wrecking them (a lower --lr, or --recipe finetune); best.ckpt keeps the best so far",
                       epoch, ap, self.start_ap)

    def check_loss(self, epoch: int, mean_loss: float) -> None:
        if self.first_loss is None:
            self.first_loss = mean_loss
        if not math.isfinite(mean_loss) or mean_loss > self.LOSS_FACTOR * self.first_loss:
            self._warn("loss", "epoch[%d]: mean training loss %f against %f in the first epoch: the run is diverging "
                               "(a lower --lr, more --warmup_epochs)", epoch, mean_loss, self.first_loss)

    def state(self) -> Dict[str, Any]:
        """What a checkpoint keeps of the guard (checkpoint extras: numbers only)."""
        values = {"guard_start_ap": self.start_ap, "guard_first_loss": self.first_loss}
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def restore(cls, logger, ckpt: Dict[str, Any]) -> "RunGuard":
        def value(key: str) -> Optional[float]:
            return float(ckpt[key].asnumpy()) if key in ckpt else None
        return cls(logger, value("guard_start_ap"), value("guard_first_loss"))

"""A training run's checkpoints: CKPT_PATH/ckpt_RANK/RANK-EPOCH_STEP.ckpt (the newest keep_checkpoint_max), its
best.ckpt, and where --resume reads."""
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import mindspore as ms
from mindspore import Tensor

from src.errors import UserError
from src.formats.checkpoint import EMA_PREFIX, read_checkpoint, save_checkpoint

CKPT_NAME = re.compile(r"^(\d+)-(\d+)_(\d+)\.ckpt$")


def list_checkpoints(folder: str) -> List[Tuple[int, str]]:
    """(global_step, path) of this run's checkpoints, oldest first."""
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(3)), os.path.join(folder, f)) for f in os.listdir(folder) if (m := CKPT_NAME.match(f))]
    return sorted(found)


class RunCheckpoints:
    """One rank's checkpoint folder."""

    def __init__(self, config):
        self.folder = os.path.join(config.ckpt_path, f"ckpt_{config.rank}")
        # every rank of a data-parallel run resumes from rank 0's, so that all start from the same state (with
        # is_save_on_master only rank 0 has saved)
        self.resume_folder = os.path.join(config.ckpt_path, "ckpt_0") if config.is_distributed else self.folder
        self.distributed = config.is_distributed
        self.rank = config.rank
        self.keep = config.keep_checkpoint_max

    def check_unused(self) -> None:
        """A run that does not resume must not mix its checkpoints with another run's."""
        if list_checkpoints(self.folder):
            raise UserError(f"{self.folder} already holds checkpoints of another run; pass --resume True to "
                            f"continue it or choose another --ckpt_path")

    def newest(self) -> str:
        """The checkpoint --resume continues."""
        found = list_checkpoints(self.resume_folder)
        if not found:
            shared = " (every rank resumes from rank 0's: ckpt_path must be a folder all ranks see)"
            raise UserError(f"--resume True but {self.resume_folder} holds no checkpoint"
                            + (shared if self.distributed else ""))
        return found[-1][1]

    def save(self, state: Dict[str, ms.Parameter], epoch: int, step: int, extra: Dict[str, Any]) -> str:
        """Write RANK-EPOCH_STEP.ckpt (epoch counted from 1) and drop the oldest beyond keep_checkpoint_max."""
        path = os.path.join(self.folder, f"{self.rank}-{epoch + 1}_{step}.ckpt")
        save_checkpoint(state, path, {"epoch": epoch, "global_step": step, **extra})
        for _, old in list_checkpoints(self.folder)[:-self.keep]:
            os.remove(old)
        return path

    def best_so_far(self, resuming: bool) -> Tuple[float, int]:
        """(AP, epoch) of best.ckpt when resuming a run that has one, else (-1, -1)."""
        path = os.path.join(self.folder, "best.ckpt")
        if not (resuming and os.path.isfile(path)):
            return -1.0, -1
        ckpt = read_checkpoint(path)
        return float(ckpt["AP"].asnumpy()), int(ckpt["epoch"].asnumpy())

    def save_best(self, weights: Dict[str, ms.Parameter], extra: Dict[str, Any]) -> str:
        path = os.path.join(self.folder, "best.ckpt")
        save_checkpoint(weights, path, extra)
        return path


def restore_training_state(state: Dict[str, ms.Parameter], ckpt: Dict[str, Any], path: str,
                           optimizer: Optional[str]) -> None:
    """Set the optimiser state and the averaged weights of `state` from a checkpoint's; a clear error when the
    checkpoint lacks them (another optimiser, or a run without ema)."""
    for name, p in state.items():
        if name.startswith("optimizer."):
            if name not in ckpt:
                other = any(k.startswith("optimizer.") and k != "optimizer.global_step" for k in ckpt)
                why = "resume it with the --optimizer it was trained with" if other else "it cannot be resumed"
                raise UserError(f"{path} has no {optimizer} optimiser state ({name}); {why}")
            p.set_data(Tensor(ckpt[name].asnumpy(), p.dtype))
        elif name.startswith(EMA_PREFIX):
            if name not in ckpt:
                raise UserError(f"{path} has no averaged weights ({name}): its run trained without ema; resume "
                                f"it with --ema False")
            p.set_data(Tensor(ckpt[name].asnumpy(), p.dtype))

"""What a training run reports as it goes: the log window's means, the progress bar, the metrics file and the
profiler of the first steps."""
import json
import os
import sys
import time
from typing import List, Optional, Tuple

import numpy as np
import mindspore as ms
from tqdm import tqdm


class LogWindow:
    """The losses and time of the steps since the last log line."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss, self.parts, self.count, self.start = 0.0, np.zeros(3), 0, time.time()

    def add(self, loss: float, parts: np.ndarray) -> None:
        self.loss += loss
        self.parts += parts
        self.count += 1

    def seconds(self) -> float:
        return time.time() - self.start

    def means(self) -> Tuple[float, List[float]]:
        return self.loss / self.count, (self.parts / self.count).tolist()


class EpochBar:
    """A progress bar over an epoch's steps, on a terminal and on the saving rank only; opened at an epoch's first
    step (or the step a resumed run starts at), closed at its end."""

    def __init__(self, steps_per_epoch: int, shown: bool):
        self.steps_per_epoch = steps_per_epoch
        self.shown = shown and sys.stderr.isatty()
        self.bar: Optional[tqdm] = None

    def update(self, epoch: int, global_step: int) -> None:
        """One step done; `global_step` counts it."""
        if self.bar is None:
            self.bar = tqdm(total=self.steps_per_epoch, initial=global_step - 1 - epoch * self.steps_per_epoch,
                            desc=f"epoch {epoch}", leave=False, disable=not self.shown)
        self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsLog:
    """One JSON line per log interval in CKPT_PATH/metrics_rankN.jsonl (for `python -m src.engine.plots`)."""

    def __init__(self, ckpt_path: str, rank: int):
        self.path = os.path.join(ckpt_path, f"metrics_rank{rank}.jsonl")

    def write(self, **values) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(values) + "\n")


class StepProfiler:
    """need_profiler: a MindSpore profile of the run's first 5 steps in CKPT_PATH/profiler."""

    STEPS = 5

    def __init__(self, config, first_step: int):
        self.first_step = first_step
        self.profiler = ms.Profiler(output_path=os.path.join(config.ckpt_path, "profiler")) \
            if config.need_profiler else None

    def after(self, global_step: int) -> None:
        if self.profiler is not None and global_step - self.first_step >= self.STEPS:
            self.profiler.analyse()
            self.profiler = None

"""Train or fine-tune YOLOv3 on a COCO-format data set (DATA_DIR/annotations/instances_train2017.json,
DATA_DIR/train2017/).

Checkpoints go to CKPT_PATH/ckpt_RANK/ and carry `epoch` and `global_step`;
`--resume True` continues the newest one, optimiser state included (in a
data-parallel run rank 0's, on every rank). Ctrl-C or SIGTERM saves a
resumable checkpoint before stopping.
"""
import json
import os
import re
import signal
import sys
import time
from typing import Dict, List, Optional, Tuple

import model_utils  # noqa: F401  first: sets the OpenMP spin count before cv2 and MindSpore load it
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn
from tqdm import tqdm

from model_utils.config import load_config
from model_utils.device_adapter import all_reduce_sum, init_distributed, setup_device
from model_utils.moxing_adapter import run_with_modelarts
from src.anchors import fit_to_training_set
from src.checkpoint import (EMA_PREFIX, head_parameter_names, load_checkpoint_into, load_for_finetuning,
                            network_parameters, read_checkpoint, save_checkpoint, state_checksum, training_info)
from src.coco import label_to_category, model_categories
from src.dataset import CocoTrainSet, RunSource, create_train_dataset
from src.ema import WeightAverage
from src.errors import UserError, run_cli
from src.evaluation import check_categories, evaluate_model
from src.guard import RunGuard
from src.layers import use_cpu_training_kernels
from src.logger import get_logger
from src.precision import setup_precision
from src.loss import YoloWithLoss
from src.lr_scheduler import get_lr
from src.sampler import DistributedSampler
from src.train_step import OPTIMIZER_STATE, make_optimizer, make_train_step
from src.yolo import build_network

CKPT_NAME = re.compile(r"^(\d+)-(\d+)_(\d+)\.ckpt$")


def list_checkpoints(folder: str) -> List[Tuple[int, str]]:
    """(global_step, path) of this run's checkpoints, oldest first."""
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(3)), os.path.join(folder, f)) for f in os.listdir(folder) if (m := CKPT_NAME.match(f))]
    return sorted(found)


def init_new_heads(network: nn.Cell, config, names: List[str]) -> None:
    """With head_init_std > 0, the heads' output conv weights among `names` (those starting anew) are drawn
    from a normal of that std (seeded: every rank draws the same), so that the first steps of a fine-tuning
    run see the bias priors rather than noise from the pretrained features."""
    if config.head_init_std <= 0:
        return
    rng = np.random.default_rng(config.seed)
    params = network_parameters(network)
    for name in sorted(names):
        if name.endswith(".weight"):
            p = params[name]
            p.set_data(Tensor((rng.standard_normal(p.shape) * config.head_init_std).astype(np.float32)))


def load_initial_weights(network: nn.Cell, config, logger) -> List[str]:
    """--resume_yolo (a whole model) or --pretrained_backbone (any part of one), of any class count; heads
    that start anew get head_init_std. Returns the names of the parameters that start anew."""
    path = config.resume_yolo or config.pretrained_backbone
    if not path:
        heads = sorted(head_parameter_names(network))
        init_new_heads(network, config, heads)
        return heads
    loaded, reinitialised = load_for_finetuning(network, path, config, build_network, bool(config.resume_yolo))
    init_new_heads(network, config, reinitialised)
    what = "darknet conv layers" if path.endswith(".weights") and not reinitialised else "parameters"
    logger.info("%s: loaded %d %s from %s", "fine-tuning" if config.resume_yolo else "pretrained backbone",
                loaded, what, path)
    if reinitialised:
        logger.info("re-initialised %d parameters whose shapes differ in %s (another class count) or that it "
                    "lacks, as for a new model: %s", len(reinitialised), path, ", ".join(reinitialised))
    return reinitialised


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


class Trainer:
    """The training loop: data, step, logging, checkpoints, resume."""

    def __init__(self, config):
        self.cfg = config
        self.main_rank = config.rank == 0 or not config.is_save_on_master
        self.logger = get_logger(log_dir=os.path.join(config.ckpt_path, "log"), rank=config.rank)
        self.logger.info("%s", config.recipe_note)
        for line in config.provenance():
            self.logger.info("config from %s", line)
        setup_precision(config, self.logger.info)
        if not config.data_dir or not os.path.isdir(config.data_dir):
            raise UserError(f"data_dir not found: {config.data_dir or '(not given)'}")
        ann = os.path.join(config.data_dir, "annotations", "instances_train2017.json")
        self.data = CocoTrainSet(ann, os.path.join(config.data_dir, "train2017"))
        self._keep_start_model_classes()
        self._set_classes()
        if config.auto_anchor:
            self._fit_anchors(ann)
        self.network = build_network(config)
        use_cpu_training_kernels(self.network)
        self.starts_as_detector = not load_initial_weights(self.network, config, self.logger)
        self.ema = WeightAverage(self.network, config.ema_decay) if config.ema else None
        self.sampler = DistributedSampler(len(self.data), config.group_size, config.rank, True, config.seed)
        self.steps_per_epoch = len(self.sampler) // config.per_batch_size
        if self.steps_per_epoch == 0:
            raise UserError(f"{len(self.sampler)} training images per rank is less than per_batch_size "
                            f"{config.per_batch_size}")
        lr = get_lr(config.lr_scheduler, config.lr, self.steps_per_epoch, config.max_epoch, config.warmup_epochs,
                    config.lr_epochs, config.lr_gamma, config.t_max, config.eta_min)
        self.lr = lr
        self.optimizer = make_optimizer(self.network, config, lr)
        net_loss = YoloWithLoss.from_config(self.network, config)
        self.loss_parts = net_loss.parts
        if config.amp_level != "O0":
            if config.device_target == "CPU":
                raise UserError(f"amp_level {config.amp_level} needs GPU or Ascend; use O0 on CPU")
            net_loss = ms.amp.auto_mixed_precision(net_loss, config.amp_level)
        self.train_cell = make_train_step(net_loss, self.optimizer, config.loss_scale)
        self.train_cell.set_train(True)
        self.ckpt_dir = os.path.join(config.ckpt_path, f"ckpt_{config.rank}")
        self.val = self._val_set() if config.run_eval else None
        self.guard = RunGuard(self.logger)
        self.epoch_losses: List[float] = []
        self.global_step = self._resume_or_check()
        self.best = self._best_so_far()
        self.interrupted = False
        self.bar: Optional[tqdm] = None

    def _on_sigint(self, *_):
        """Ctrl-C: finish the current step, then save and stop (see train())."""
        self.interrupted = True

    def _arm_interrupt(self) -> None:
        """MindSpore's runtime installs its own SIGINT handler while graphs run (it ends the process
        with SIGTERM); re-arm ours after each step, for both signals, so Ctrl-C saves first."""
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, self._on_sigint)

    def _keep_start_model_classes(self) -> None:
        """Fine-tuning a whole model whose classes are the training file's (as many, each category one of its
        labels by name, else id: label_to_category): the labels keep the model's order, so that its heads
        keep their classes whatever the file's ids. Otherwise labels follow the sorted category ids."""
        cfg, path = self.cfg, self.cfg.resume_yolo
        if not path or cfg.is_set("num_classes") or cfg.is_set("labels") or cfg.is_set("coco_ids"):
            return
        ckpt = read_checkpoint(path) if path.endswith(".ckpt") else {}
        if "labels" in ckpt:
            ids = [int(i) for i in str(ckpt["coco_ids"]).split(",")]
            names = str(ckpt["labels"]).split("\n")
        else:  # converted darknet weights: the config's classes
            ids, names = model_categories(cfg)
        if names is None or len(names) != len(self.data.cat_ids):
            return
        try:
            labels = label_to_category(self.data.coco, self.data.ann_file, ids, names)
        except UserError:
            return
        order = [labels[k] for k in range(len(names))]
        if order != self.data.cat_ids:
            self.data.order_classes(order)
            self.logger.info("fine-tuning: the %d classes keep the label order of %s (categories matched by name, "
                             "else id)", len(order), path)

    def _set_classes(self) -> None:
        cfg, n = self.cfg, len(self.data.cat_ids)
        if not cfg.is_set("num_classes"):
            cfg.num_classes = n
        elif cfg.num_classes < n:
            raise UserError(f"the annotations have {n} categories but num_classes is {cfg.num_classes}")
        if not cfg.is_set("labels"):
            cfg.labels = self.data.names + [f"class_{i}" for i in range(n, cfg.num_classes)]
        if not cfg.is_set("coco_ids"):
            cfg.coco_ids = self.data.cat_ids + list(range(max(self.data.cat_ids) + 1,
                                                          max(self.data.cat_ids) + 1 + cfg.num_classes - n))

    def _fit_anchors(self, ann: str) -> None:
        """auto_anchor: train with anchors fitted to the training boxes (src.anchors), unless the anchors are given
        on the command line or come with --resume_yolo's model. Seeded: a resumed run fits the same ones."""
        cfg = self.cfg
        if cfg.resume_yolo or cfg.on_command_line("anchor_scales"):
            self.logger.info("auto_anchor: keeping the anchors of %s",
                             "--resume_yolo" if cfg.resume_yolo else "--anchor_scales")
            return
        try:
            fitted, fit, current_fit, count = fit_to_training_set(ann, cfg)
        except UserError as e:
            self.logger.info("auto_anchor: keeping the config's anchors (%s)", e)
            return
        if fit <= current_fit:
            self.logger.info("auto_anchor: the config's anchors fit the %d training boxes best (mean best IoU %.3f, "
                             "k-means %.3f); keeping them", count, current_fit, fit)
            return
        self.logger.info("auto_anchor: mean best IoU of the %d training boxes %.3f with the config's anchors, %.3f "
                         "with k-means ones; training with anchor_scales %s", count, current_fit, fit, fitted)
        cfg.anchor_scales = fitted

    def _val_set(self) -> Tuple[str, str]:
        """The val annotation file and images of eval during training, checked before training starts."""
        cfg = self.cfg
        if cfg.eval_interval < 1:
            raise UserError(f"eval_interval must be at least 1, got {cfg.eval_interval}")
        ann = cfg.val_ann_file or os.path.join(cfg.data_dir, "annotations", "instances_val2017.json")
        images = cfg.val_image_dir or os.path.join(cfg.data_dir, "val2017")
        if not os.path.isdir(images):
            raise UserError(f"run_eval: val image directory not found: {images} (see --val_image_dir)")
        check_categories(cfg, ann)
        return ann, images

    def _best_so_far(self) -> Tuple[float, int]:
        """(AP, epoch) of best.ckpt when resuming a run that has one, else (-1, -1)."""
        path = os.path.join(self.ckpt_dir, "best.ckpt")
        if not (self.cfg.resume and os.path.isfile(path)):
            return -1.0, -1
        ckpt = read_checkpoint(path)
        return float(ckpt["AP"].asnumpy()), int(ckpt["epoch"].asnumpy())

    def state(self) -> Dict[str, ms.Parameter]:
        """Everything a checkpoint holds to resume exactly: the weights, the optimiser state, the averages."""
        params = network_parameters(self.network)
        params.update({f"optimizer.{n}": p for n, p in self.optimizer.parameters_and_names()
                       if n.startswith(OPTIMIZER_STATE) or n == "global_step"})
        params.update(self.ema.state() if self.ema is not None else {})
        return params

    def model_weights(self) -> Dict[str, ms.Parameter]:
        """The model that eval during training scores and best.ckpt keeps: the averaged weights with `ema`."""
        return self.ema.model() if self.ema is not None else network_parameters(self.network)

    def resume_dir(self) -> str:
        """Where --resume reads: rank 0's folder on every rank of a data-parallel run, so that all ranks
        start from the same state (with is_save_on_master only rank 0 has saved)."""
        return os.path.join(self.cfg.ckpt_path, "ckpt_0") if self.cfg.is_distributed else self.ckpt_dir

    def _resume_or_check(self) -> int:
        if not self.cfg.resume:
            if list_checkpoints(self.ckpt_dir):
                raise UserError(f"{self.ckpt_dir} already holds checkpoints of another run; pass --resume True to "
                                f"continue it or choose another --ckpt_path")
            return 0
        folder = self.resume_dir()
        found = list_checkpoints(folder)
        if not found:
            shared = " (every rank resumes from rank 0's: ckpt_path must be a folder all ranks see)"
            raise UserError(f"--resume True but {folder} holds no checkpoint" + (shared if self.cfg.is_distributed
                                                                                 else ""))
        path = found[-1][1]
        ckpt = read_checkpoint(path)
        load_checkpoint_into(self.network, path, self.cfg.model_name)
        for name, p in self.state().items():
            if name.startswith("optimizer."):
                if name not in ckpt:
                    other = any(k.startswith("optimizer.") and k != "optimizer.global_step" for k in ckpt)
                    why = "resume it with the --optimizer it was trained with" if other else "it cannot be resumed"
                    raise UserError(f"{path} has no {self.cfg.optimizer} optimiser state ({name}); {why}")
                p.set_data(Tensor(ckpt[name].asnumpy(), p.dtype))
            elif name.startswith(EMA_PREFIX):
                if name not in ckpt:
                    raise UserError(f"{path} has no averaged weights ({name}): its run trained without ema; resume "
                                    f"it with --ema False")
                p.set_data(Tensor(ckpt[name].asnumpy(), p.dtype))
        self.guard = RunGuard.restore(self.logger, ckpt)
        step = int(ckpt["global_step"].asnumpy())
        if self.cfg.is_distributed and all_reduce_sum(np.array([step]))[0] != step * self.cfg.group_size:
            raise UserError(f"the ranks found different newest checkpoints in {folder} (global_step {step} "
                            f"on rank {self.cfg.rank})")
        self.logger.info("resuming from %s at global_step %d, state checksum %s", path, step,
                         state_checksum(self.state()))
        return step

    def sync_bn_statistics(self) -> None:
        """Average BN running statistics over the ranks (data parallel keeps one set per rank), so that
        every rank's checkpoint holds the same model. Every rank must call it."""
        stats = [p for n, p in self.state().items() if n.endswith(".moving_mean") or n.endswith(".moving_variance")]
        flat = np.concatenate([p.asnumpy().reshape(-1) for p in stats])
        mean = all_reduce_sum(flat) / self.cfg.group_size
        offset = 0
        for p in stats:
            p.set_data(Tensor(mean[offset:offset + p.size].reshape(p.shape), p.dtype))
            offset += p.size

    def save(self, epoch: int, sync: bool = True) -> None:
        """Checkpoint (on the saving ranks); `sync` False skips the collective BN averaging, for
        Ctrl-C, which need not reach every rank at the same step."""
        if self.cfg.is_distributed and sync:
            self.sync_bn_statistics()
        if not self.main_rank:
            return
        step = int(self.optimizer.global_step.asnumpy().reshape(-1)[0])
        path = os.path.join(self.ckpt_dir, f"{self.cfg.rank}-{epoch + 1}_{step}.ckpt")
        state = self.state()
        save_checkpoint(state, path, {"epoch": epoch, "global_step": step, **training_info(self.cfg),
                                      **self.guard.state()})
        for _, old in list_checkpoints(self.ckpt_dir)[:-self.cfg.keep_checkpoint_max]:
            os.remove(old)
        self.logger.info("saved %s, state checksum %s", path, state_checksum(state))

    def evaluate(self, epoch: int) -> None:
        """Eval during training (run_eval) after `epoch` if it is due: AP/AP50 on the val set into the log and
        the metrics log, and CKPT_PATH/ckpt_RANK/best.ckpt when AP is the best so far. Every rank evaluates
        its share of the images (as eval.py does); call it on all ranks after save()."""
        cfg, done = self.cfg, epoch + 1
        if self.val is None or done < cfg.eval_start_epoch or (done - cfg.eval_start_epoch) % cfg.eval_interval:
            return
        ap, ap50 = self._val_ap()
        if ap > self.best[0]:
            self.best = (ap, epoch)
            if self.main_rank:
                path = os.path.join(self.ckpt_dir, "best.ckpt")
                step = int(self.optimizer.global_step.asnumpy().reshape(-1)[0])
                save_checkpoint(self.model_weights(), path,
                                {"epoch": epoch, "global_step": step, "AP": ap, "AP50": ap50,
                                 **training_info(self.cfg)})
                self.logger.info("saved best checkpoint %s (epoch[%d], AP:%.6f)", path, epoch, ap)
        if self.main_rank:
            self.logger.info("epoch[%d], val AP:%.6f, AP50:%.6f, best AP:%.6f at epoch[%d]", epoch, ap, ap50,
                             self.best[0], self.best[1])
            self.log_metrics(step=self.global_step, epoch=epoch, AP=ap, AP50=ap50)
        self.guard.check_ap(epoch, ap)

    def _val_ap(self) -> Tuple[float, float]:
        """(AP, AP50) of the model on the val set, every rank scoring its share."""
        stats = evaluate_model(self.cfg, self.model_weights(), *self.val, os.path.join(self.cfg.ckpt_path, "eval"),
                               self.logger)
        values = np.array([stats["AP"], stats["AP50"]] if stats is not None else [0.0, 0.0])
        if self.cfg.is_distributed:
            values = all_reduce_sum(values)
        return float(values[0]), float(values[1])

    def evaluate_start(self) -> None:
        """Eval during training from a whole pretrained detector (none of it starting anew): its val AP before the
        first step, which the guard compares later ones with."""
        if self.val is None or self.global_step or not self.starts_as_detector:
            return
        ap, ap50 = self._val_ap()
        self.guard.start_ap = ap
        if self.main_rank:
            self.logger.info("val AP at the start (the weights loaded): AP:%.6f, AP50:%.6f", ap, ap50)

    def train(self) -> None:
        """The loop: one step per batch, then the log line, checkpoints and eval when they are due; Ctrl-C or
        SIGTERM saves and stops after the current step."""
        self.evaluate_start()
        source = RunSource(self.data, self.sampler, self.cfg, self.global_step,
                           self.cfg.max_epoch * self.steps_per_epoch)
        batches = create_train_dataset(source, self.cfg.num_parallel_workers).create_tuple_iterator(num_epochs=1) \
            if len(source) else ()
        window, profiler = LogWindow(), StepProfiler(self.cfg, self.global_step)
        epoch = self.global_step // self.steps_per_epoch
        try:
            for batch in batches:
                epoch = self.global_step // self.steps_per_epoch
                self.step(batch, epoch, window)
                profiler.after(self.global_step)
                self.log_if_due(epoch, window)
                self.save_and_evaluate_if_due(epoch)
                if self.interrupted:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.save(epoch, sync=False)
            raise
        finally:
            self.close_bar()
        self.logger.info("training done: %d iterations", self.global_step)

    def step(self, batch, epoch: int, window: "LogWindow") -> None:
        if self.bar is None:
            self.bar = self._epoch_bar(epoch)
        loss, overflow, _ = self.train_cell(*batch)
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.global_step)
        self._arm_interrupt()
        self.bar.update()
        if bool(overflow.asnumpy()):
            self.logger.warning("iter[%d]: gradient overflow, step skipped", self.global_step)
        value = float(loss.asnumpy())
        window.add(value, self.loss_parts.asnumpy())
        self.epoch_losses.append(value)

    def log_if_due(self, epoch: int, window: "LogWindow") -> None:
        """Every log_interval steps (saving ranks): the model zoo's log line and a metrics row."""
        cfg = self.cfg
        if self.global_step % cfg.log_interval or not self.main_rank:
            return
        fps = window.count * cfg.per_batch_size * cfg.group_size / window.seconds()
        lr = float(self.lr[min(self.global_step, len(self.lr)) - 1])
        loss, (box, obj, cls) = window.means()
        self.logger.info("epoch[%d], iter[%d], loss:%f, fps:%.2f imgs/sec, lr:%f", epoch, self.global_step, loss,
                         fps, lr)
        self.log_metrics(step=self.global_step, epoch=epoch, loss=loss, box_loss=box, obj_loss=obj, cls_loss=cls,
                         lr=lr, images_per_sec=fps)
        window.reset()

    def save_and_evaluate_if_due(self, epoch: int) -> None:
        """A checkpoint every ckpt_interval steps (if > 0) and at each epoch's end, then eval during training."""
        saved = self.cfg.ckpt_interval > 0 and self.global_step % self.cfg.ckpt_interval == 0
        if saved:
            self.save(epoch)
        if self.global_step % self.steps_per_epoch == 0:
            self.close_bar()
            self.check_epoch_loss(epoch)
            if not saved:
                self.save(epoch)
            self.evaluate(epoch)

    def check_epoch_loss(self, epoch: int) -> None:
        """The guard on the epoch's mean loss, averaged over the ranks (every rank keeps the same guard state in its
        checkpoints); every rank must call it."""
        mean = np.array([np.mean(self.epoch_losses)])  # called after a step: never empty
        if self.cfg.is_distributed:
            mean = all_reduce_sum(mean) / self.cfg.group_size
        self.guard.check_loss(epoch, float(mean[0]))
        self.epoch_losses = []

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _epoch_bar(self, epoch: int) -> tqdm:
        return tqdm(total=self.steps_per_epoch, initial=self.global_step - epoch * self.steps_per_epoch,
                    desc=f"epoch {epoch}", leave=False, disable=not (sys.stderr.isatty() and self.main_rank))

    def log_metrics(self, **values) -> None:
        """One JSON line per log interval in CKPT_PATH/metrics_rankN.jsonl (for `python -m src.plots`)."""
        with open(os.path.join(self.cfg.ckpt_path, f"metrics_rank{self.cfg.rank}.jsonl"), "a",
                  encoding="utf-8") as f:
            f.write(json.dumps(values) + "\n")



def main() -> None:
    config = load_config(description=__doc__)
    setup_device(config)
    if config.is_distributed:
        init_distributed(config)
    ms.set_seed(config.seed)
    np.random.seed(config.seed)
    run_with_modelarts(config, lambda: Trainer(config).train())


if __name__ == "__main__":
    run_cli(main)

"""The training loop: data, step, logging, checkpoints, eval during training, resume, Ctrl-C."""
import os
import signal
from typing import Dict, List, Tuple

import numpy as np
import mindspore as ms
from mindspore import Tensor

from model_utils.device_adapter import all_reduce_sum
from src.cpu.precision import setup_precision
from src.cpu.routing import use_cpu_training_kernels
from src.data.dataset import CocoTrainSet, RunSource, create_train_dataset
from src.data.sampler import DistributedSampler
from src.engine.ema import WeightAverage
from src.engine.evaluation import check_categories, evaluate_model
from src.engine.guard import RunGuard
from src.engine.loss import YoloWithLoss
from src.engine.lr_scheduler import get_lr
from src.engine.precision_timing import measure_speedup
from src.engine.progress import EpochBar, LogWindow, MetricsLog, StepProfiler
from src.engine.run_checkpoints import RunCheckpoints, restore_training_state
from src.engine.start import load_initial_weights, open_start_weights, training_spec
from src.engine.train_step import OPTIMIZER_STATE, make_optimizer, make_train_step
from src.errors import UserError
from src.engine.detector import LiveWeights
from src.formats.checkpoint import load_checkpoint_into, network_parameters, read_checkpoint, state_checksum
from src.formats.model_card import ModelCard, checkpoint_entry
from src.logger import get_logger
from src.models.yolo import build_network


class Trainer:
    """One rank's training run, set up from the config: the model (its spec decided before the build), the start
    weights or the checkpoint it resumes, the optimiser and the step; train() runs it."""

    def __init__(self, config):
        self.cfg = config
        self.main_rank = config.rank == 0 or not config.is_save_on_master
        self.logger = get_logger(log_dir=os.path.join(config.ckpt_path, "log"), rank=config.rank)
        self.logger.info("%s", config.recipe_note)
        for line in config.provenance():
            self.logger.info("config from %s", line)
        setup_precision(config, self.logger.info,
                        measure_speedup(config, "train", config.per_batch_size, config.training_shape or 416))
        if not config.data_dir or not os.path.isdir(config.data_dir):
            raise UserError(f"data_dir not found: {config.data_dir or '(not given)'}")
        self.data = CocoTrainSet(os.path.join(config.data_dir, "annotations", "instances_train2017.json"),
                                 os.path.join(config.data_dir, "train2017"))
        start = open_start_weights(config)
        self.card, label_order = training_spec(config, self.data, start, self.logger)
        if label_order != self.data.cat_ids:
            self.data.order_classes(label_order)
        self.spec = self.card.spec
        self.network = build_network(self.spec)
        use_cpu_training_kernels(self.network)
        self.starts_as_detector = not load_initial_weights(self.network, self.spec, config, start, self.logger)
        self.ema = WeightAverage(self.network, config.ema_decay) if config.ema else None
        self.sampler = DistributedSampler(len(self.data), config.group_size, config.rank, True, config.seed)
        self.steps_per_epoch = len(self.sampler) // config.per_batch_size
        if self.steps_per_epoch == 0:
            raise UserError(f"{len(self.sampler)} training images per rank is less than per_batch_size "
                            f"{config.per_batch_size}")
        self.lr = get_lr(config.lr_scheduler, config.lr, self.steps_per_epoch, config.max_epoch,
                         config.warmup_epochs, config.lr_epochs, config.lr_gamma, config.t_max, config.eta_min)
        self.optimizer = make_optimizer(self.network, config, self.lr)
        net_loss = YoloWithLoss.from_config(self.network, self.spec, config)
        self.loss_parts = net_loss.parts
        if config.amp_level != "O0":
            if config.device_target == "CPU":
                raise UserError(f"amp_level {config.amp_level} needs GPU or Ascend; use O0 on CPU")
            net_loss = ms.amp.auto_mixed_precision(net_loss, config.amp_level)
        self.train_cell = make_train_step(net_loss, self.optimizer, config.loss_scale)
        self.train_cell.set_train(True)
        self.checkpoints = RunCheckpoints(config)
        self.val = self._val_set() if config.run_eval else None
        self.guard = RunGuard(self.logger)
        self.epoch_losses: List[float] = []
        self.global_step = self._resume() if config.resume else self._start_fresh()
        self.best = self.checkpoints.best_so_far(config.resume)
        self.metrics = MetricsLog(config.ckpt_path, config.rank)
        self.bar = EpochBar(self.steps_per_epoch, self.main_rank)
        self.interrupted = False

    def _on_sigint(self, *_):
        """Ctrl-C: finish the current step, then save and stop (see train())."""
        self.interrupted = True

    def _arm_interrupt(self) -> None:
        """MindSpore's runtime installs its own SIGINT handler while graphs run (it ends the process
        with SIGTERM); re-arm ours after each step, for both signals, so Ctrl-C saves first."""
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, self._on_sigint)

    def _val_set(self) -> Tuple[str, str]:
        """The val annotation file and images of eval during training, checked before training starts."""
        cfg = self.cfg
        if cfg.eval_interval < 1:
            raise UserError(f"eval_interval must be at least 1, got {cfg.eval_interval}")
        ann = cfg.val_ann_file or os.path.join(cfg.data_dir, "annotations", "instances_val2017.json")
        images = cfg.val_image_dir or os.path.join(cfg.data_dir, "val2017")
        if not os.path.isdir(images):
            raise UserError(f"run_eval: val image directory not found: {images} (see --val_image_dir)")
        check_categories(self.spec, ann)
        return ann, images

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

    def model_card(self) -> ModelCard:
        """The card a checkpoint carries: what the run trains, with the checksum of the model's weights now."""
        return self.card.with_checksum(state_checksum(self.model_weights()))

    def _start_fresh(self) -> int:
        self.checkpoints.check_unused()
        return 0

    def _resume(self) -> int:
        """--resume: the newest checkpoint's whole state; its global_step."""
        path = self.checkpoints.newest()
        ckpt = read_checkpoint(path)
        load_checkpoint_into(self.network, path, self.spec.model_name, ckpt=ckpt)
        restore_training_state(self.state(), ckpt, path, self.cfg.optimizer)
        self.guard = RunGuard.restore(self.logger, ckpt)
        step = int(ckpt["global_step"].asnumpy())
        if self.cfg.is_distributed and all_reduce_sum(np.array([step]))[0] != step * self.cfg.group_size:
            raise UserError(f"the ranks found different newest checkpoints in {self.checkpoints.resume_folder} "
                            f"(global_step {step} on rank {self.cfg.rank})")
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

    def optimizer_step(self) -> int:
        return int(self.optimizer.global_step.asnumpy().reshape(-1)[0])

    def save(self, epoch: int, sync: bool = True) -> None:
        """Checkpoint (on the saving ranks); `sync` False skips the collective BN averaging, for
        Ctrl-C, which need not reach every rank at the same step."""
        if self.cfg.is_distributed and sync:
            self.sync_bn_statistics()
        if not self.main_rank:
            return
        state = self.state()
        path = self.checkpoints.save(state, epoch, self.optimizer_step(),
                                     {**checkpoint_entry(self.model_card()), **self.guard.state()})
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
                path = self.checkpoints.save_best(self.model_weights(), {
                    "epoch": epoch, "global_step": self.optimizer_step(), "AP": ap, "AP50": ap50,
                    **checkpoint_entry(self.model_card())})
                self.logger.info("saved best checkpoint %s (epoch[%d], AP:%.6f)", path, epoch, ap)
        if self.main_rank:
            self.logger.info("epoch[%d], val AP:%.6f, AP50:%.6f, best AP:%.6f at epoch[%d]", epoch, ap, ap50,
                             self.best[0], self.best[1])
            self.metrics.write(step=self.global_step, epoch=epoch, AP=ap, AP50=ap50)
        self.guard.check_ap(epoch, ap)

    def _val_ap(self) -> Tuple[float, float]:
        """(AP, AP50) of the model on the val set, every rank scoring its share."""
        stats = evaluate_model(self.cfg, LiveWeights(self.card, self.model_weights()), *self.val,
                               os.path.join(self.cfg.ckpt_path, "eval"), self.logger)
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
        source = RunSource(self.data, self.sampler, self.cfg, self.spec, self.global_step,
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
            self.bar.close()
        self.logger.info("training done: %d iterations", self.global_step)

    def step(self, batch, epoch: int, window: LogWindow) -> None:
        loss, overflow, _ = self.train_cell(*batch)
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.global_step)
        self._arm_interrupt()
        self.bar.update(epoch, self.global_step)
        if bool(overflow.asnumpy()):
            self.logger.warning("iter[%d]: gradient overflow, step skipped", self.global_step)
        value = float(loss.asnumpy())
        window.add(value, self.loss_parts.asnumpy())
        self.epoch_losses.append(value)

    def log_if_due(self, epoch: int, window: LogWindow) -> None:
        """Every log_interval steps (saving ranks): the model zoo's log line and a metrics row."""
        cfg = self.cfg
        if self.global_step % cfg.log_interval or not self.main_rank:
            return
        fps = window.count * cfg.per_batch_size * cfg.group_size / window.seconds()
        lr = float(self.lr[min(self.global_step, len(self.lr)) - 1])
        loss, (box, obj, cls) = window.means()
        self.logger.info("epoch[%d], iter[%d], loss:%f, fps:%.2f imgs/sec, lr:%f", epoch, self.global_step, loss,
                         fps, lr)
        self.metrics.write(step=self.global_step, epoch=epoch, loss=loss, box_loss=box, obj_loss=obj,
                           cls_loss=cls, lr=lr, images_per_sec=fps)
        window.reset()

    def save_and_evaluate_if_due(self, epoch: int) -> None:
        """A checkpoint every ckpt_interval steps (if > 0) and at each epoch's end, then eval during training."""
        saved = self.cfg.ckpt_interval > 0 and self.global_step % self.cfg.ckpt_interval == 0
        if saved:
            self.save(epoch)
        if self.global_step % self.steps_per_epoch == 0:
            self.bar.close()
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

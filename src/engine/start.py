"""Where a training run starts: the model it trains (ModelSpec, decided before the build) and the weights it
starts from (--resume_yolo, --pretrained_backbone or none)."""
from typing import Dict, List

import numpy as np
from mindspore import Tensor, nn

from src.data.anchors import fit_to_training_set
from src.data.coco import label_to_category
from src.data.dataset import CocoTrainSet
from src.errors import UserError
from src.formats.checkpoint import (finetuning_spec, head_parameter_names, load_for_finetuning, network_parameters,
                                    read_checkpoint)
from src.models.spec import ModelSpec


def keep_start_model_classes(config, data: CocoTrainSet, logger) -> None:
    """Fine-tuning a whole model whose classes are the training file's (as many, each category one of its
    labels by name, else id: label_to_category): the labels keep the model's order, so that its heads
    keep their classes whatever the file's ids. Otherwise labels follow the sorted category ids."""
    path = config.resume_yolo
    if not path or config.is_set("num_classes") or config.is_set("labels") or config.is_set("coco_ids"):
        return
    ckpt = read_checkpoint(path) if path.endswith(".ckpt") else {}
    if "labels" in ckpt:
        ids = [int(i) for i in str(ckpt["coco_ids"]).split(",")]
        names = str(ckpt["labels"]).split("\n")
    else:  # converted darknet weights: the config's classes
        ids, names = ModelSpec.from_config(config).categories()
    if names is None or len(names) != len(data.cat_ids):
        return
    try:
        labels = label_to_category(data.coco, data.ann_file, ids, names)
    except UserError:
        return
    order = [labels[k] for k in range(len(names))]
    if order != data.cat_ids:
        data.order_classes(order)
        logger.info("fine-tuning: the %d classes keep the label order of %s (categories matched by name, "
                    "else id)", len(order), path)


def training_spec(config, data: CocoTrainSet, logger) -> ModelSpec:
    """The model a run trains, decided before the build: the config's, with the training set's classes (in the
    start model's label order where it has the file's classes), the fitted anchors (auto_anchor) and what the
    start's weights were trained with (input_centering; with --resume_yolo the anchors)."""
    keep_start_model_classes(config, data, logger)
    spec = ModelSpec.from_config(config).replace(**_classes(config, data))
    if config.auto_anchor:
        spec = spec.replace(**_fitted_anchors(config, data.ann_file, logger))
    path = config.resume_yolo or config.pretrained_backbone
    return finetuning_spec(config, spec, path, bool(config.resume_yolo)) if path else spec


def _classes(config, data: CocoTrainSet) -> Dict[str, object]:
    """num_classes, labels and coco_ids from the training set, where the user did not set them."""
    n = len(data.cat_ids)
    classes: Dict[str, object] = {}
    if not config.is_set("num_classes"):
        classes["num_classes"] = n
    elif config.num_classes < n:
        raise UserError(f"the annotations have {n} categories but num_classes is {config.num_classes}")
    num_classes = classes.get("num_classes", config.num_classes)
    if not config.is_set("labels"):
        classes["labels"] = data.names + [f"class_{i}" for i in range(n, num_classes)]
    if not config.is_set("coco_ids"):
        first_free = max(data.cat_ids) + 1
        classes["coco_ids"] = data.cat_ids + list(range(first_free, first_free + num_classes - n))
    return classes


def _fitted_anchors(config, ann_file: str, logger) -> Dict[str, object]:
    """auto_anchor: anchors fitted to the training boxes (src.data.anchors), unless the anchors are given on the
    command line or come with --resume_yolo's model. Seeded: a resumed run fits the same ones."""
    if config.resume_yolo or config.on_command_line("anchor_scales"):
        logger.info("auto_anchor: keeping the anchors of %s",
                    "--resume_yolo" if config.resume_yolo else "--anchor_scales")
        return {}
    try:
        fitted, fit, current_fit, count = fit_to_training_set(ann_file, config)
    except UserError as e:
        logger.info("auto_anchor: keeping the config's anchors (%s)", e)
        return {}
    if fit <= current_fit:
        logger.info("auto_anchor: the config's anchors fit the %d training boxes best (mean best IoU %.3f, "
                    "k-means %.3f); keeping them", count, current_fit, fit)
        return {}
    logger.info("auto_anchor: mean best IoU of the %d training boxes %.3f with the config's anchors, %.3f "
                "with k-means ones; training with anchor_scales %s", count, current_fit, fit, fitted)
    return {"anchor_scales": fitted}


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


def load_initial_weights(network: nn.Cell, spec: ModelSpec, config, logger) -> List[str]:
    """--resume_yolo (a whole model) or --pretrained_backbone (any part of one), of any class count, into `network`
    built from `spec`; heads that start anew get head_init_std. Returns the names of the parameters that start
    anew."""
    path = config.resume_yolo or config.pretrained_backbone
    if not path:
        heads = sorted(head_parameter_names(network))
        init_new_heads(network, config, heads)
        return heads
    loaded, reinitialised = load_for_finetuning(network, path, spec, bool(config.resume_yolo))
    init_new_heads(network, config, reinitialised)
    what = "darknet conv layers" if path.endswith(".weights") and not reinitialised else "parameters"
    logger.info("%s: loaded %d %s from %s", "fine-tuning" if config.resume_yolo else "pretrained backbone",
                loaded, what, path)
    if reinitialised:
        logger.info("re-initialised %d parameters whose shapes differ in %s (another class count) or that it "
                    "lacks, as for a new model: %s", len(reinitialised), path, ", ".join(reinitialised))
    return reinitialised

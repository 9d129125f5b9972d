"""Where a training run starts: the weights it starts from (--resume_yolo, --pretrained_backbone or none, read
once) and the model it trains (its card, decided before the build)."""
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from mindspore import Tensor, nn

from src.data.anchors import fit_to_training_set
from src.data.coco import label_to_category
from src.data.dataset import CocoTrainSet
from src.errors import UserError
from src.formats.checkpoint import head_parameter_names, load_for_finetuning, network_parameters
from src.formats.model_card import ModelCard, StoredCard, open_weights, resolve, user_source
from src.models.spec import ModelSpec

CLASS_KEYS = ("num_classes", "labels", "coco_ids")


@dataclass(frozen=True)
class StartWeights:
    """The file a run starts from, read once: its card and its parameters (open_weights)."""
    path: str
    card: StoredCard
    content: Any
    whole_model: bool  # --resume_yolo (else --pretrained_backbone)


def open_start_weights(config) -> Optional[StartWeights]:
    """--resume_yolo or --pretrained_backbone, read once; None when training from scratch."""
    path = config.resume_yolo or config.pretrained_backbone
    if not path:
        return None
    if path.endswith((".onnx", ".mindir", ".air")):
        raise UserError(f"cannot train from the exported graph {path}: give the .ckpt or darknet .weights it was "
                        f"exported from")
    card, content = open_weights(path)
    return StartWeights(path, card, content, bool(config.resume_yolo))


def start_model_label_order(config, data: CocoTrainSet, start: Optional[StartWeights], logger) -> List[int]:
    """The category id of each label, in label order. Fine-tuning a whole model whose classes are the training
    file's (as many, each category one of its labels by name, else id: label_to_category): the model's order, so
    that its heads keep their classes whatever the file's ids. Otherwise the sorted category ids."""
    if start is None or not start.whole_model or any(user_source(config, key) for key in CLASS_KEYS):
        return list(data.cat_ids)
    if "labels" in start.card.values and "coco_ids" in start.card.values:
        ids, names = start.card.values["coco_ids"], start.card.values["labels"]
    else:  # converted darknet weights: the config's classes
        ids, names = ModelSpec.from_config(config).categories()
    if names is None or len(names) != len(data.cat_ids):
        return list(data.cat_ids)
    try:
        labels = label_to_category(data.coco, data.ann_file, ids, names)
    except UserError:
        return list(data.cat_ids)
    order = [labels[k] for k in range(len(names))]
    if order != data.cat_ids:
        logger.info("fine-tuning: the %d classes keep the label order of %s (categories matched by name, "
                    "else id)", len(order), start.path)
    return order


def training_spec(config, data: CocoTrainSet, start: Optional[StartWeights], logger) -> Tuple[ModelCard, List[int]]:
    """The card of the model a run trains, decided before the build, and the category id of each of its labels
    (the data set is left as it is; the trainer puts its labels in this order). model_card.resolve's rule, with
    the training set's classes (in the start model's label order where it has the file's classes) and
    auto_anchor's fitted anchors where a card stands; from the start weights' card: for a whole model
    (--resume_yolo) every other field, for a backbone only input_centering."""
    order = start_model_label_order(config, data, start, logger)
    found = {key: (value, "the training set") for key, value in _classes(config, data, order).items()}
    if config.auto_anchor:
        found.update({key: (value, "auto_anchor") for key, value in _fitted_anchors(config, data.ann_file, start,
                                                                                     logger).items()})
    stored = None
    if start is not None and start.whole_model:
        stored = dataclasses.replace(start.card, values={k: v for k, v in start.card.values.items()
                                                         if k not in CLASS_KEYS})
    elif start is not None:  # a backbone: only whether it sees centred pixels is its to say
        said = {**start.card.assumed, **start.card.values}
        stored = StoredCard(start.path, "card", {"input_centering": said["input_centering"]}) \
            if "input_centering" in said else None
    return resolve(config, stored, logger, found), order


def _classes(config, data: CocoTrainSet, order: List[int]) -> Dict[str, object]:
    """num_classes, labels and coco_ids of the training set, labels in `order`, where the user did not set them."""
    n = len(data.cat_ids)
    name_of = dict(zip(data.cat_ids, data.names))
    classes: Dict[str, object] = {}
    if not user_source(config, "num_classes"):
        classes["num_classes"] = n
    elif config.num_classes < n:
        raise UserError(f"the annotations have {n} categories but num_classes is {config.num_classes}")
    num_classes = classes.get("num_classes", config.num_classes)
    if not user_source(config, "labels"):
        classes["labels"] = [name_of[c] for c in order] + [f"class_{i}" for i in range(n, num_classes)]
    if not user_source(config, "coco_ids"):
        first_free = max(order) + 1
        classes["coco_ids"] = list(order) + list(range(first_free, first_free + num_classes - n))
    return classes


def _fitted_anchors(config, ann_file: str, start: Optional[StartWeights], logger) -> Dict[str, object]:
    """auto_anchor: anchors fitted to the training boxes (src.data.anchors), unless the user gives the anchors
    (command line or their config file) or they come with --resume_yolo's model. Seeded: a resumed run fits the
    same ones."""
    given = user_source(config, "anchor_scales")
    if given or (start is not None and start.whole_model):
        logger.info("auto_anchor: keeping the anchors of %s", given or "--resume_yolo")
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


def load_initial_weights(network: nn.Cell, spec: ModelSpec, config, start: Optional[StartWeights],
                         logger) -> List[str]:
    """The start weights, --resume_yolo (a whole model) or --pretrained_backbone (any part of one), of any class
    count, into `network` built from `spec`; heads that start anew get head_init_std. Returns the names of the
    parameters that start anew."""
    if start is None:
        heads = sorted(head_parameter_names(network))
        init_new_heads(network, config, heads)
        return heads
    path = start.path
    loaded, reinitialised = load_for_finetuning(network, path, start.content, spec, start.whole_model)
    init_new_heads(network, config, reinitialised)
    what = "darknet conv layers" if path.endswith(".weights") and not reinitialised else "parameters"
    logger.info("%s: loaded %d %s from %s", "fine-tuning" if config.resume_yolo else "pretrained backbone",
                loaded, what, path)
    if reinitialised:
        logger.info("re-initialised %d parameters whose shapes differ in %s (another class count) or that it "
                    "lacks, as for a new model: %s", len(reinitialised), path, ", ".join(reinitialised))
    return reinitialised

"""Saving and loading model weights: MindSpore checkpoints (atomic) and darknet .weights."""
import os
from typing import Any, Dict, Optional

import mindspore as ms
from mindspore import nn

from src.darknet_weights import load_darknet_weights
from src.errors import UserError


def network_parameters(network: nn.Cell) -> Dict[str, ms.Parameter]:
    """Parameters keyed by their path inside `network`, whatever cells wrap it."""
    return dict(network.parameters_and_names())


def save_checkpoint(params: Dict[str, ms.Parameter], path: str, extra: Optional[Dict[str, Any]] = None) -> None:
    """Write named parameters (see `network_parameters`) and extra values to `path` atomically."""
    params = [{"name": n, "data": p} for n, p in params.items()]
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp.ckpt")
    try:
        ms.save_checkpoint(params, tmp, append_dict=extra or None)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_checkpoint(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        return ms.load_checkpoint(path)
    except (ValueError, RuntimeError, TypeError) as e:
        raise UserError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None


def load_checkpoint_into(network: nn.Cell, path: str, model_name: str, strict: bool = True,
                         ckpt: Optional[Dict[str, Any]] = None) -> int:
    """Load a .ckpt (or its already read contents `ckpt`) into `network`; returns how many parameters were set.

    With `strict`, every network parameter must be present; names or shapes of
    another model are an error naming the first mismatch.
    """
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    params = network_parameters(network)
    mismatched = [(n, tuple(ckpt[n].shape), tuple(p.shape)) for n, p in params.items()
                  if n in ckpt and tuple(ckpt[n].shape) != tuple(p.shape)]
    missing = [n for n in params if n not in ckpt]
    if mismatched:
        n, got, want = mismatched[0]
        raise UserError(f"checkpoint {path} does not fit {model_name}: {len(mismatched)} parameters have other "
                        f"shapes (first: {n} is {got} in the checkpoint, {want} in the model)")
    if (strict and missing) or len(missing) == len(params):
        raise UserError(f"checkpoint {path} does not fit {model_name}: {len(missing)} of {len(params)} "
                        f"parameters missing (first: {missing[0]})")
    for n, p in params.items():
        if n in ckpt:
            p.set_data(ms.Tensor(ckpt[n].asnumpy(), p.dtype))
    return len(params) - len(missing)


def apply_class_info(config, ckpt: Dict[str, Any]) -> None:
    """Take num_classes, labels and category ids saved by train.py, unless the user set them."""
    if "num_classes" in ckpt and not config.is_set("num_classes"):
        config.num_classes = int(ckpt["num_classes"].asnumpy())
    if "labels" in ckpt and not config.is_set("labels"):
        config.labels = str(ckpt["labels"]).split("\n")
    if "coco_ids" in ckpt and not config.is_set("coco_ids"):
        config.coco_ids = [int(i) for i in str(ckpt["coco_ids"]).split(",")]


def build_with_weights(config, path: str, build) -> nn.Cell:
    """`build(config)` a network and load a whole model into it from a .ckpt or darknet .weights file.

    A checkpoint written by train.py also sets num_classes, labels and coco_ids (unless given).
    """
    if not path:
        raise UserError("no weights given (--pretrained / --ckpt_file)")
    if path.endswith(".weights"):
        network = build(config)
        load_darknet_weights(network, path, config.model_name, allow_prefix=False)
        return network
    ckpt = read_checkpoint(path)
    apply_class_info(config, ckpt)
    network = build(config)
    load_checkpoint_into(network, path, config.model_name, ckpt=ckpt)
    return network

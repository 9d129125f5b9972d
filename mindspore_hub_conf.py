"""MindSpore Hub entry point, as in the model zoo: create_network(name, **kwargs)."""
import os

from mindspore import nn

from model_utils.config import ROOT, load_config
from src.errors import UserError
from src.models.spec import ModelSpec
from src.models.yolo import MODELS, build_network
from src.models.yolo_head import DetectionModel, YoloDecode


def _as_option(value) -> str:
    """A Python value as the command-line text load_config parses: 1,2,3 or [[10, 13], [16, 30]]."""
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (list, tuple)) for v in value):
            return repr([list(v) if isinstance(v, (list, tuple)) else v for v in value])
        return ",".join(map(str, value))
    return str(value)


def create_network(name: str, *args, **kwargs) -> nn.Cell:
    """The named YOLOv3 network. kwargs: any config key (e.g. num_classes=3); with
    `with_decode=True` the network comes with the box decode, as export.py exports it."""
    if name not in MODELS:
        raise UserError(f"unknown network {name!r}; choose one of {', '.join(MODELS)}")
    with_decode = kwargs.pop("with_decode", False)
    argv = ["--config_path", os.path.join(ROOT, MODELS[name].config_file)]
    for key, value in kwargs.items():
        argv += [f"--{key}", _as_option(value)]
    spec = ModelSpec.from_config(load_config(argv))
    network = build_network(spec)
    if with_decode:
        return DetectionModel(network, YoloDecode(spec.anchor_scales, spec.anchor_mask, spec.num_classes))
    return network

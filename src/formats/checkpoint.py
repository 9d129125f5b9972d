"""Saving and loading model weights: MindSpore checkpoints (atomic), and fine-tuning starts of any class count
(a checkpoint's or a darknet file's)."""
import hashlib
import os
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import mindspore as ms
from mindspore import nn

from src.errors import UserError
from src.formats.darknet_weights import DarknetFile, load_darknet_for_finetuning
from src.models.layers import HeadConv
from src.models.spec import ModelSpec

EMA_PREFIX = "ema."  # a train.py checkpoint's averaged weights (src/engine/ema.py), beside the weights it trains on


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


def state_checksum(params: Dict[str, Any]) -> str:
    """The first 16 hex digits of a SHA-256 over every tensor's name, dtype, shape and bytes, in name order: two
    training states print the same checksum exactly when they are bit-identical."""
    digest = hashlib.sha256()
    for name in sorted(params):
        value = params[name].asnumpy()
        digest.update(f"{name}:{value.dtype}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def read_checkpoint(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        return ms.load_checkpoint(path)
    except (ValueError, RuntimeError, TypeError) as e:
        raise UserError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None


def model_weights(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint's model: where it holds averaged weights (train.py with `ema`), those under the network's names
    in place of the weights training went on with; otherwise the checkpoint as it is."""
    if not any(k.startswith(EMA_PREFIX) for k in ckpt):
        return ckpt
    return {k: ckpt.get(EMA_PREFIX + k, v) for k, v in ckpt.items() if not k.startswith(EMA_PREFIX)}


def head_parameter_names(network: nn.Cell) -> Set[str]:
    """Names of the heads' output convolutions' parameters: the only ones whose shape depends on num_classes."""
    return {f"{cell_name}.{name}" for cell_name, cell in network.cells_and_names() if isinstance(cell, HeadConv)
            for name, _ in cell.parameters_and_names()}


def _fit(network: nn.Cell, ckpt: Dict[str, Any], path: str, model_name: str, strict: bool,
         heads_may_differ: bool) -> Tuple[int, List[str]]:
    """Load what fits; returns (parameters set, head parameters left as initialised)."""
    params = network_parameters(network)
    heads = head_parameter_names(network) if heads_may_differ else set()
    mismatched = [(n, tuple(ckpt[n].shape), tuple(p.shape)) for n, p in params.items()
                  if n in ckpt and tuple(ckpt[n].shape) != tuple(p.shape)]
    missing = [n for n in params if n not in ckpt]
    kept = sorted(n for n in heads if n in missing or n in {m[0] for m in mismatched})
    mismatched = [m for m in mismatched if m[0] not in heads]
    missing = [n for n in missing if n not in heads]
    if mismatched:
        n, got, want = mismatched[0]
        raise UserError(f"checkpoint {path} does not fit {model_name}: {len(mismatched)} parameters have other "
                        f"shapes (first: {n} is {got} in the checkpoint, {want} in the model)")
    if (strict and missing) or len(missing) + len(kept) == len(params):
        first = (missing or kept)[0]
        raise UserError(f"checkpoint {path} does not fit {model_name}: {len(missing) + len(kept)} of {len(params)} "
                        f"parameters missing (first: {first})")
    for n, p in params.items():
        if n in ckpt and n not in kept:
            p.set_data(ms.Tensor(ckpt[n].asnumpy(), p.dtype))
    return len(params) - len(missing) - len(kept), kept


def load_checkpoint_into(network: nn.Cell, path: str, model_name: str, strict: bool = True,
                         ckpt: Optional[Dict[str, Any]] = None) -> int:
    """Load a .ckpt (or its already read contents `ckpt`) into `network`; returns how many parameters were set.

    With `strict`, every network parameter must be present; names or shapes of
    another model are an error naming the first mismatch.
    """
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    return _fit(network, ckpt, path, model_name, strict, heads_may_differ=False)[0]


def load_for_finetuning(network: nn.Cell, path: str, content: Union[Dict[str, Any], DarknetFile], spec: ModelSpec,
                        whole_model: bool) -> Tuple[int, List[str]]:
    """Fine-tuning start: a .ckpt or darknet .weights of any class count, as open_weights read it (`content`),
    into `network` built from `spec` (training_spec: the anchors and input_centering the weights were trained
    with).

    Every parameter whose name and shape fit is loaded; the heads' output convs
    of another class count keep the initialisation of the just-built network
    (as a new model: HeadConv's bias priors) and are returned by name. Any
    other mismatch is another architecture: an error. `whole_model` (for
    --resume_yolo) also requires every other parameter to be present; without
    it (--pretrained_backbone) a file may cover only the first layers. Of a
    checkpoint holding averaged weights (ema), those load.
    Returns (parameters loaded, parameters re-initialised); for a darknet file
    that fits exactly, (conv layers loaded, []).
    """
    if isinstance(content, DarknetFile):
        loaded, ckpt = load_darknet_for_finetuning(network, content, spec, whole_model)
        if ckpt is None:
            return loaded, []
    else:
        ckpt = model_weights(content)
    return _fit(network, ckpt, path, spec.model_name, whole_model, heads_may_differ=True)

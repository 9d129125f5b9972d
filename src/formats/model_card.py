"""A model's card: what its weights are, written with them and into every export, read back once per run.

The card is one JSON object (`model_card`): card_version, package_version, architecture, backbone_layers,
num_classes, names, category_ids (the annotation file's ids the classes were trained on), anchors, anchor_mask,
input_size, letterbox, input_centering, weights_checksum (state_checksum of the model's weights). It is stored as
the value `model_card` of a .ckpt, an ONNX file's metadata_props and a MINDIR's user_info, and beside an AIR
file as FILE.air.json. darknet .weights hold none: darknet's models see raw pixels (input_centering off), the
rest is the config's.

Which value a run uses, the same rule for every field (logged once per run):
    command line > the user's config file > the weights' card > the model's defaults
where the model's defaults are default_config.yaml and the package's configs/ (a model's architecture and anchors,
the recipes). In training the training set's classes and auto_anchor's fitted anchors stand where a card does
(`resolve`'s `found`). A checkpoint without a card, or with the older layout (num_classes, labels, coco_ids,
anchor_scales, anchor_mask, input_centering as separate values), loads with one warning naming what was assumed.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from model_utils.config import COMMAND_LINE, ROOT
from src import __version__
from src.errors import UserError
from src.fileio import write_text
from src.formats.checkpoint import read_checkpoint
from src.formats.darknet_weights import read_weights_file
from src.models.spec import ModelSpec

CARD_KEY = "model_card"
CARD_VERSION = 1
PACKAGE_CONFIGS = os.path.join(ROOT, "configs")
# card field -> config key, in the order the card and the log list them
FIELDS = {"architecture": "model_name", "backbone_layers": "backbone_layers", "num_classes": "num_classes",
          "names": "labels", "category_ids": "coco_ids", "anchors": "anchor_scales", "anchor_mask": "anchor_mask",
          "input_size": "testing_shape", "letterbox": "letterbox", "input_centering": "input_centering"}
CONFIG_KEYS = tuple(FIELDS.values())
CARD_FIELD = {key: name for name, key in FIELDS.items()}
# what train.py saved before the card: config key -> how the checkpoint held it
OLDER_LAYOUT: Dict[str, Callable[[Any], Any]] = {
    "num_classes": lambda v: int(v.asnumpy()), "labels": lambda v: str(v).split("\n"),
    "coco_ids": lambda v: [int(i) for i in str(v).split(",")], "anchor_scales": lambda v: json.loads(str(v)),
    "anchor_mask": lambda v: json.loads(str(v)), "input_centering": lambda v: bool(int(v.asnumpy()))}


def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


VALID: Dict[str, Callable[[Any], bool]] = {
    "model_name": lambda v: isinstance(v, str) and bool(v),
    "backbone_layers": _ints,
    "num_classes": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "labels": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "coco_ids": _ints,
    "anchor_scales": lambda v: isinstance(v, list) and all(
        isinstance(a, list) and len(a) == 2 and all(map(_number, a)) for a in v),
    "anchor_mask": lambda v: isinstance(v, list) and all(map(_ints, v)),
    "testing_shape": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % 32 == 0,
    "letterbox": lambda v: isinstance(v, bool),
    "input_centering": lambda v: isinstance(v, bool),
}


@dataclass(frozen=True)
class ModelCard:
    """What a model is: its spec (architecture, classes, anchors, input_centering), the input size and letterbox
    its images are prepared with, and the checksum of its weights."""
    spec: ModelSpec
    input_size: int
    letterbox: bool
    weights_checksum: str = ""
    package_version: str = __version__

    def value(self, key: str) -> Any:
        """The card's value of a config key (FIELDS)."""
        if key == "testing_shape":
            return self.input_size
        return self.letterbox if key == "letterbox" else getattr(self.spec, key)

    def to_dict(self) -> Dict[str, Any]:
        card = {"card_version": CARD_VERSION, "package_version": self.package_version}
        card.update({name: self.value(key) for name, key in FIELDS.items()})
        card["weights_checksum"] = self.weights_checksum
        return card

    def to_json(self) -> str:
        """The card as stored: one JSON object (UTF-8, names as they are)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def with_checksum(self, checksum: str) -> "ModelCard":
        return ModelCard(self.spec, self.input_size, self.letterbox, checksum, __version__)


@dataclass(frozen=True)
class StoredCard:
    """What a file says about its model: `values` by config key (the fields it holds); `layout` is "card",
    "older" (train.py's values before the card), "none" (a checkpoint or export without one) or "darknet";
    `assumed`: what a file of the older layouts is taken to mean where it does not say."""
    path: str
    layout: str
    values: Dict[str, Any] = field(default_factory=dict)
    weights_checksum: str = ""
    package_version: str = ""
    assumed: Dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.path} (darknet weights)" if self.layout == "darknet" else f"{self.path}'s card"


def decode(text: str, path: str) -> StoredCard:
    """A stored card (the JSON text of `ModelCard.to_json`); a UserError naming the field that is not valid."""
    try:
        card = json.loads(text)
    except ValueError:
        raise UserError(f"{path}: its {CARD_KEY} is not JSON") from None
    if not isinstance(card, dict):
        raise UserError(f"{path}: its {CARD_KEY} is not a JSON object")
    values = {}
    for name, key in FIELDS.items():
        if name in card:
            if not VALID[key](card[name]):
                raise UserError(f"{path}: its {CARD_KEY} has an invalid {name}: {card[name]!r}")
            values[key] = card[name]
    return StoredCard(path, "card", values, str(card.get("weights_checksum", "")),
                      str(card.get("package_version", "")))


def _checkpoint_card(path: str, ckpt: Dict[str, Any]) -> StoredCard:
    if CARD_KEY in ckpt:
        return decode(str(ckpt[CARD_KEY]), path)
    values = {key: read(ckpt[key]) for key, read in OLDER_LAYOUT.items() if key in ckpt}
    # checkpoints from before input_centering (and converted darknet weights) see raw pixels
    return StoredCard(path, "older" if values else "none", values, assumed={"input_centering": False})


def _graph_card(path: str, entries: Dict[str, str]) -> StoredCard:
    """The card of an exported graph's metadata (ONNX metadata_props, MINDIR user_info)."""
    return decode(entries[CARD_KEY], path) if CARD_KEY in entries else StoredCard(path, "none")


def sidecar_path(path: str) -> str:
    """Where the card of an export that cannot hold one (AIR) is written: FILE.air.json."""
    return path + ".json"


def read_bytes(path: str, what: str) -> bytes:
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    with open(path, "rb") as f:
        return f.read()


def _onnx(path: str) -> Tuple[StoredCard, Any]:
    import onnx
    from google.protobuf.message import DecodeError
    try:
        model = onnx.load_from_string(read_bytes(path, "ONNX file"))
    except (DecodeError, ValueError, OSError, RuntimeError) as e:
        raise UserError(f"{path} is not an ONNX file ({type(e).__name__})") from None
    return _graph_card(path, {p.key: p.value for p in model.metadata_props}), model


def _mindir(path: str) -> Tuple[StoredCard, Any]:
    from google.protobuf.message import DecodeError
    from mindspore.train import mind_ir_pb2
    model = mind_ir_pb2.ModelProto()
    try:
        model.ParseFromString(read_bytes(path, "MINDIR file"))
    except (DecodeError, ValueError) as e:
        raise UserError(f"{path} is not a MINDIR file ({type(e).__name__})") from None
    return _graph_card(path, dict(model.user_info)), model


def open_weights(path: str, darknet: bool = False) -> Tuple[StoredCard, Any]:
    """Read a model file once: its card, and its parameters (.ckpt: every value it holds, by name; darknet
    .weights, or any file with `darknet`: header and floats, DarknetFile) or its graph (.onnx: onnx.ModelProto;
    .mindir: MindIR's ModelProto; .air: None, its card beside it)."""
    if darknet or path.endswith(".weights"):
        return StoredCard(path, "darknet", {"input_centering": False}), read_weights_file(path)
    if path.endswith(".onnx"):
        return _onnx(path)
    if path.endswith(".mindir"):
        return _mindir(path)
    if path.endswith(".air"):
        sidecar = sidecar_path(path)
        return (decode(read_bytes(sidecar, "model card").decode("utf-8"), path) if os.path.isfile(sidecar)
                else StoredCard(path, "none")), None
    ckpt = read_checkpoint(path)
    return _checkpoint_card(path, ckpt), ckpt


# ---- writing


def checkpoint_entry(card: ModelCard) -> Dict[str, str]:
    """The card as a checkpoint's extra value (save_checkpoint's `extra`)."""
    return {CARD_KEY: card.to_json()}


def put_in_onnx(model, card: ModelCard) -> None:
    """Set the card in an onnx.ModelProto's metadata_props (replacing one there)."""
    kept = [p for p in model.metadata_props if p.key != CARD_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=CARD_KEY, value=card.to_json())


def put_in_mindir(model, card: ModelCard) -> None:
    """Set the card in a MindIR ModelProto's user_info (ms.export's custom_func)."""
    model.user_info[CARD_KEY] = card.to_json()


def write_sidecar(path: str, card: ModelCard) -> str:
    """FILE.json beside an export that cannot hold the card, atomically; returns its path."""
    target = sidecar_path(path)
    write_text(target, json.dumps(card.to_dict(), ensure_ascii=False, indent=1) + "\n")
    return target


# ---- which value a run uses


def user_source(config, key: str) -> Optional[str]:
    """Where the user gave `key`: "command line", or their config file; None where it is a model default (not
    given, or from default_config.yaml, the package's configs/ or a recipe)."""
    if config.on_command_line(key):
        return COMMAND_LINE
    if not config.is_set(key):
        return None
    source = config.source(key)
    path = os.path.abspath(os.path.join(ROOT, source))
    return None if path.startswith(PACKAGE_CONFIGS + os.sep) else source


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a) == json.dumps(b)


def _shown(key: str, value: Any) -> str:
    name = CARD_FIELD[key]
    if isinstance(value, list) and len(value) > 6 and not isinstance(value[0], list):
        return f"{name} {', '.join(map(str, value[:3]))}, ... ({len(value)})"
    if isinstance(value, list):
        return f"{name} {json.dumps(value, ensure_ascii=False)}"
    return f"{name} {value}"


def resolve(config, stored: Optional[StoredCard], logger, found: Optional[Dict[str, Tuple[Any, str]]] = None,
            strict: bool = False) -> ModelCard:
    """The card a run uses: each field from the command line, else the user's config file, else what the
    weights' card (`stored`) or `found` (key -> (value, where from); training: the training set's classes)
    give, else the model's defaults. `strict` (an export, whose graph is fixed): a value the user gave that
    contradicts the card is an error naming both. Logs where each value came from, and a warning naming what
    was assumed for a file without a card (or with the older layout)."""
    found = dict(found or {})
    if stored is not None:
        for key, value in stored.values.items():
            found.setdefault(key, (value, stored.describe()))
        for key, value in stored.assumed.items():
            found.setdefault(key, (value, f"{stored.path} (assumed)"))
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    for key in CONFIG_KEYS:
        given = user_source(config, key)
        if given and key in found and strict and not _same(getattr(config, key), found[key][0]):
            raise UserError(f"{key} {json.dumps(getattr(config, key), ensure_ascii=False)} ({given}) contradicts "
                            f"{found[key][1]}: {CARD_FIELD[key]} {json.dumps(found[key][0], ensure_ascii=False)}")
        if given:
            values[key], sources[key] = getattr(config, key), given
        elif key in found:
            values[key], sources[key] = found[key]
        else:
            values[key], sources[key] = getattr(config, key), f"{config.source(key)} (default)"
    by_source: Dict[str, List[str]] = {}
    for key in CONFIG_KEYS:
        by_source.setdefault(sources[key], []).append(_shown(key, values[key]))
    logger.info("model card: %s", "; ".join(f"from {s}: {', '.join(v)}" for s, v in by_source.items()))
    if stored is not None and stored.layout in ("none", "older"):
        assumed = [_shown(k, values[k]) for k in CONFIG_KEYS if sources[k].endswith(("(default)", "(assumed)"))]
        what = "no model card" if stored.layout == "none" else "the older layout (no model card)"
        logger.warning("%s has %s: assumed %s", stored.path, what, ", ".join(assumed) or "nothing")
    spec = ModelSpec(**{k: values[k] for k in ModelSpec.__dataclass_fields__})
    checksum = stored.weights_checksum if stored is not None else ""
    return ModelCard(spec, values["testing_shape"], values["letterbox"], checksum)


def card_of_config(config) -> ModelCard:
    """A new model's card (no weights): the config's values."""
    return ModelCard(ModelSpec.from_config(config), config.testing_shape, config.letterbox)

"""The one config loader: default_config.yaml, then the start's recipe, then --config_path, then --key value.

default_config.yaml holds every key with its default (first YAML document), its
help text (second) and allowed choices (third), as in the MindSpore model zoo, and
the checks its value must pass (fourth; model_utils/checks.py).
A --config_path file overrides only the keys it names; it may name the files it
builds on in `_base_` (a path or a list, relative to it; later ones and the file
itself win), as mmdetection's configs do, so that a model's keys live in one
file and a training recipe in another. The recipe (configs/recipes/) is chosen
by the start: `recipe_finetune` when training from weights (--resume_yolo or
--pretrained_backbone), else `recipe_scratch`, unless `recipe` names one; every
key of the user's config files or command line wins over the recipe's. Every
key can be given on the command line; a value's type is the type of its default:
booleans as True/False or 1/0 alike (also in YAML files), lists as 1,2,3 (a
list of pairs as 10,13,16,30 or "[[10,13],[16,30]]"). Config.source(key) says
where each value came from.
"""
import argparse
import ast
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from model_utils.checks import check_values
from src.errors import ArgumentParser, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "default_config.yaml")
BASE_KEY = "_base_"
RECIPE_FILES = {"scratch": "recipe_scratch", "finetune": "recipe_finetune"}
COMMAND_LINE = "command line"
Layer = Tuple[str, Dict[str, Any]]  # (file, the values it names)


class Config:
    """Attribute access to a flat dict of settings."""

    def __init__(self, values: Dict[str, Any], explicit: Sequence[str] = (), command_line: Sequence[str] = (),
                 sources: Optional[Dict[str, str]] = None, recipe_note: str = ""):
        self.__dict__.update(values)
        self._explicit = frozenset(explicit)
        self._command_line = frozenset(command_line)
        self._sources = dict(sources or {})
        self.recipe_note = recipe_note

    def is_set(self, key: str) -> bool:
        """Whether `key` was given by --config_path or on the command line (not a default)."""
        return key in self._explicit

    def on_command_line(self, key: str) -> bool:
        """Whether `key` was given on the command line (it then wins over what a checkpoint says)."""
        return key in self._command_line

    def source(self, key: str) -> str:
        """Where the value of `key` came from: default_config.yaml, a config or recipe file, or the command line."""
        return self._sources.get(key, _shown(DEFAULT_CONFIG))

    def provenance(self) -> List[str]:
        """One line per file (and the command line) that set values, naming them: `SOURCE: key value, ...`, in the
        order they apply (the recipe, the config files, the command line)."""
        by_source: Dict[str, List[str]] = {}
        for key, source in self._sources.items():
            by_source.setdefault(source, []).append(f"{key} {getattr(self, key)}")
        return [f"{source}: {', '.join(by_source[source])}" for source in by_source]

    def with_values(self, **values: Any) -> "Config":
        """A new config with `values` resolved when the run starts (the ranks, the ModelArts paths); this one is
        left as it is, and where each other value came from is kept."""
        return Config({**self.to_dict(), **values}, self._explicit, self._command_line, self._sources,
                      self.recipe_note)

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_") and k != "recipe_note"}

    def __repr__(self) -> str:
        return "\n".join(f"{k}: {v!r}" for k, v in sorted(self.to_dict().items()))


def _read_yaml(path: str) -> List[Dict[str, Any]]:
    if not os.path.isfile(path):
        raise UserError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d or {} for d in yaml.safe_load_all(f)]
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise UserError(f"config file {path} must hold key: value mappings")
    return docs


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool (True/False or 1/0)"
    if isinstance(v, list):
        return "list"
    return type(v).__name__


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise ValueError(text)


def _parse_scalar_like(text: str, default: Any) -> Any:
    if isinstance(default, bool):
        return _parse_bool(text)
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    return text


def _parse_list(text: str, default: list) -> list:
    text = text.strip()
    if text.startswith("["):
        value = ast.literal_eval(text)
        if not isinstance(value, list):
            raise ValueError(text)
        return value
    items = [t.strip() for t in text.split(",") if t.strip() != ""]
    if default and isinstance(default[0], list):
        inner = len(default[0])
        if len(items) % inner:
            raise ValueError(text)
        nums = [_parse_number(t) for t in items]
        return [nums[i:i + inner] for i in range(0, len(nums), inner)]
    if default and isinstance(default[0], str):
        return items
    return [_parse_number(t) for t in items]


def _parse_number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _matches(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """Check (and, for command-line text, parse) one value against its default's type."""
    try:
        if isinstance(value, str) and not isinstance(default, str):
            value = _parse_list(value, default) if isinstance(default, list) else _parse_scalar_like(value, default)
    except (ValueError, SyntaxError):
        raise UserError(f"{source}: {key} expects {_type_name(default)}, got {value!r}") from None
    if isinstance(default, bool) and not isinstance(value, bool) and value in (0, 1):
        value = bool(value)
    if not _matches(value, default):
        raise UserError(f"{source}: {key} expects {_type_name(default)}, got {value!r}")
    if isinstance(default, float):
        value = float(value)
    return value


def _shown(path: str) -> str:
    """A config file's path as the log and --help show it: relative to the repository when inside it."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def _bases(path: str, values: Dict[str, Any]) -> List[str]:
    bases = values.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise UserError(f"{path}: {BASE_KEY} must be a file name or a list of them, got {bases!r}")
    return [os.path.normpath(os.path.join(os.path.dirname(path), b)) for b in bases]


def read_layers(path: str, chain: Tuple[str, ...] = ()) -> List[Layer]:
    """The files `path` builds on (each `_base_`, after its own bases), then `path`: (file, values), lowest first.
    Paths of recipe files a file names become absolute (they are relative to that file)."""
    path = os.path.abspath(path)
    if path in chain:
        raise UserError(f"config files build on each other in a circle: {' -> '.join(map(_shown, chain + (path,)))}")
    values = dict(_read_yaml(path)[0])
    layers: List[Layer] = []
    for base in _bases(path, values):
        layers += [layer for layer in read_layers(base, chain + (path,)) if layer[0] not in {f for f, _ in layers}]
    for key in RECIPE_FILES.values():
        if isinstance(values.get(key), str) and values[key]:
            values[key] = os.path.normpath(os.path.join(os.path.dirname(path), values[key]))
    return layers + [(path, values)]


def _merge(layers: List[Layer], defaults: Dict[str, Any], values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """Apply each layer's values (type-checked against the defaults) in order, noting which file set each key."""
    for path, layer in layers:
        for key, value in layer.items():
            if key not in defaults:
                raise UserError(f"{path}: unknown config key '{key}'")
            values[key] = _coerce(key, value, defaults[key], path)
            sources[key] = _shown(path)


def _choose_recipe(values: Dict[str, Any], sources: Dict[str, str]) -> Tuple[str, str]:
    """(recipe name, why) for these values: `recipe` if it names one, else by the start."""
    if values["recipe"] != "auto":
        return values["recipe"], f"{sources.get('recipe', COMMAND_LINE)} names it"
    start = next((key for key in ("resume_yolo", "pretrained_backbone") if values[key]), "")
    if start:
        return "finetune", f"training starts from the weights of {start} {values[start]}"
    return "scratch", "training starts from scratch (no resume_yolo or pretrained_backbone)"


def _recipe_layers(values: Dict[str, Any], sources: Dict[str, str]) -> Tuple[str, List[Layer], str]:
    """The chosen recipe's name, its file and the file's bases, and the log's line saying which and why."""
    name, why = _choose_recipe(values, sources)
    path = values[RECIPE_FILES[name]]
    if not path:
        return name, [], f"recipe {name}: {why}; {values['model_name']} names no {RECIPE_FILES[name]}, so " \
                         f"default_config.yaml's training values hold"
    if not os.path.isfile(path):
        raise UserError(f"{RECIPE_FILES[name]} not found: {path} ({sources.get(RECIPE_FILES[name], COMMAND_LINE)})")
    layers = read_layers(path)
    for file, layer in layers:
        named = sorted(set(layer) & {"recipe", *RECIPE_FILES.values()})
        if named:
            raise UserError(f"{file}: a recipe cannot choose recipes ({', '.join(named)})")
    return name, layers, f"recipe {name} ({_shown(path)}): {why}; the config files and command line win over it"


def _apply(layers: List[Layer], given: Dict[str, Any], defaults: Dict[str, Any]
           ) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The defaults, then the layers, then the command line's values; and where each value that is not a default
    came from, in the order they apply."""
    values, sources = dict(defaults), {}
    _merge(layers, defaults, values, sources)
    values.update(given)
    sources.update({key: COMMAND_LINE for key in given})
    order = [_shown(f) for f, _ in layers] + [COMMAND_LINE]
    return values, dict(sorted(sources.items(), key=lambda item: order.index(item[1])))


def _command_line_values(argv: Sequence[str], defaults: Dict[str, Any]) -> Dict[str, Any]:
    """--key value options, parsed and type-checked (unknown options are left to the full parser)."""
    parser = ArgumentParser(add_help=False, allow_abbrev=False)
    for key in defaults:
        parser.add_argument(f"--{key}", type=str, default=None)
    args, _ = parser.parse_known_args(argv)
    given = {key: _coerce(key, getattr(args, key), defaults[key], f"--{key}")
             for key in defaults if getattr(args, key) is not None}
    for key in RECIPE_FILES.values():
        if given.get(key):
            given[key] = os.path.abspath(given[key])
    return given


def _check_choices(values: Dict[str, Any], choices: Dict[str, list]) -> None:
    for key, allowed in choices.items():
        if key in values and values[key] not in allowed:
            raise UserError(f"{key} must be one of {', '.join(map(str, allowed))}, got {values[key]!r}")


def _help_parser(description: str, values: Dict[str, Any], sources: Dict[str, str], helps: Dict[str, str],
                 choices: Dict[str, list], recipe_note: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=description, epilog=recipe_note, allow_abbrev=False)
    parser.add_argument("--config_path", default=DEFAULT_CONFIG, help="YAML file overriding default_config.yaml "
                        f"(it may name files it builds on in {BASE_KEY})")
    for key, value in values.items():
        allowed = f"; one of {', '.join(map(str, choices[key]))}" if key in choices else ""
        source = f", from {sources[key]}" if key in sources else ""
        parser.add_argument(f"--{key}", type=str, default=None, metavar=type(value).__name__.upper(),
                            help=f"{helps.get(key, '')} (default: {value}{source}{allowed})")
    return parser


def _joined_negative_values(argv: List[str], defaults: Dict[str, Any]) -> List[str]:
    """`--key -1,2` as `--key=-1,2`: argparse reads a value starting with '-' that is not one number as an option."""
    out: List[str] = []
    for arg in argv:
        if out and out[-1][2:] in defaults and arg.startswith("-") and not arg.startswith("--"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def value_rules() -> Dict[str, str]:
    """default_config.yaml's value checks (its fourth document), key -> rule."""
    docs = _read_yaml(DEFAULT_CONFIG)
    return docs[3] if len(docs) > 3 else {}


def load_config(argv: Optional[Sequence[str]] = None, description: str = "") -> Config:
    """Build the config for a script from default_config.yaml, the recipe, --config_path (and its bases) and argv."""
    docs = _read_yaml(DEFAULT_CONFIG)
    defaults = docs[0]
    argv = _joined_negative_values(list(sys.argv[1:] if argv is None else argv), defaults)
    helps = docs[1] if len(docs) > 1 else {}
    choices = docs[2] if len(docs) > 2 else {}
    rules = docs[3] if len(docs) > 3 else {}

    pre = ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config_path", default=DEFAULT_CONFIG)
    known, _ = pre.parse_known_args(argv)
    user_layers = read_layers(known.config_path) if os.path.abspath(known.config_path) != DEFAULT_CONFIG else []
    given = _command_line_values(argv, defaults)

    user, user_sources = _apply(user_layers, given, defaults)
    _check_choices(user, choices)
    recipe, recipe_layers, recipe_note = _recipe_layers(user, user_sources)
    values, sources = _apply(recipe_layers + user_layers, given, defaults)
    values["recipe"] = recipe

    parser = _help_parser(description, values, sources, helps, choices, recipe_note)
    _, unknown = parser.parse_known_args(argv)
    if unknown:
        raise UserError(f"unknown option {unknown[0]} (see --help)")
    _check_choices(values, choices)
    values["config_path"] = os.path.abspath(known.config_path)
    config = Config(values, user_sources, given, sources, recipe_note)
    check_values(values, rules, config.source, check_paths=not values["enable_modelarts"])
    return config

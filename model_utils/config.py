"""The one config loader: default_config.yaml, then --config_path, then --key value.

default_config.yaml holds every key with its default (first YAML document), its
help text (second) and allowed choices (third), as in the MindSpore model zoo.
A --config_path file overrides only the keys it names. Every key can then be
given on the command line; a value's type is the type of its default:
booleans as True/False or 1/0 alike (also in YAML files), lists as 1,2,3 (a
list of pairs as 10,13,16,30 or "[[10,13],[16,30]]").
"""
import argparse
import ast
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import yaml

from src.errors import UserError
from src.yolo import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "default_config.yaml")


class Config:
    """Attribute access to a flat dict of settings."""

    def __init__(self, values: Dict[str, Any], explicit: Sequence[str] = (), command_line: Sequence[str] = ()):
        self.__dict__.update(values)
        self._explicit = frozenset(explicit)
        self._command_line = frozenset(command_line)

    def is_set(self, key: str) -> bool:
        """Whether `key` was given by --config_path or on the command line (not a default)."""
        return key in self._explicit

    def on_command_line(self, key: str) -> bool:
        """Whether `key` was given on the command line (it then wins over what a checkpoint says)."""
        return key in self._command_line

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

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


def load_config(argv: Optional[Sequence[str]] = None, description: str = "") -> Config:
    """Build the config for a script from default_config.yaml, --config_path and argv."""
    argv = list(sys.argv[1:] if argv is None else argv)
    docs = _read_yaml(DEFAULT_CONFIG)
    defaults = docs[0]
    helps = docs[1] if len(docs) > 1 else {}
    choices = {**(docs[2] if len(docs) > 2 else {}), "model_name": list(MODELS)}

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config_path", default=DEFAULT_CONFIG)
    known, _ = pre.parse_known_args(argv)
    values = dict(defaults)
    explicit = set()
    if os.path.abspath(known.config_path) != DEFAULT_CONFIG:
        override = _read_yaml(known.config_path)[0]
        for key, value in override.items():
            if key not in defaults:
                raise UserError(f"{known.config_path}: unknown config key '{key}'")
            values[key] = _coerce(key, value, defaults[key], known.config_path)
            explicit.add(key)

    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument("--config_path", default=DEFAULT_CONFIG, help="YAML file overriding default_config.yaml")
    for key, value in values.items():
        allowed = f"; one of {', '.join(map(str, choices[key]))}" if key in choices else ""
        parser.add_argument(f"--{key}", type=str, default=None, metavar=type(value).__name__.upper(),
                            help=f"{helps.get(key, '')} (default: {value}{allowed})")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise UserError(f"unknown option {unknown[0]} (see --help)")
    command_line = set()
    for key in values:
        text = getattr(args, key)
        if text is not None:
            values[key] = _coerce(key, text, defaults[key], f"--{key}")
            command_line.add(key)
    explicit |= command_line
    for key, allowed in choices.items():
        if key in values and values[key] not in allowed:
            raise UserError(f"{key} must be one of {', '.join(map(str, allowed))}, got {values[key]!r}")
    shape = values.get("training_shape", 0)
    if shape < 0 or shape % 32:
        raise UserError(f"training_shape must be 0 (multi-scale) or a positive multiple of 32, got {shape}")
    values["config_path"] = os.path.abspath(known.config_path)
    return Config(values, explicit, command_line)

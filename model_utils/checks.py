"""Value checks of the config keys: default_config.yaml's fourth document gives each key its rule.

A rule is a list of conditions separated by commas, all of which must hold:

    > N, >= N, < N, <= N, != N   a number (in a list, every number of it)
    multiple of N                a number (in a list, every number of it)
    length N, length >= N        a list's item count
    unique                       a list's items all differ
    nonempty                     a text, or every text of a list, is not blank
    file, dir, path              a file, a folder, or either, that the scripts read: it must exist when given
    source                       a path that must exist, or a camera index (predict.py --input)
    output file, output dir      a path the scripts write: it must not be a folder (file) or a file (dir)

The path kinds are also what the launchers in scripts/ make absolute before they change folder
(`python -m model_utils.checks --absolute ARGS...`). Existence is not checked on ModelArts, where the
paths name what the run copies in first.
"""
import os
import re
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from src.errors import UserError, run_cli

PATH_KINDS = ("file", "dir", "path", "source", "output file", "output dir")
_COMPARE = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b, "!=": lambda a, b: a != b}
_CONDITION = re.compile(r"^(?:(?P<op>>=|<=|!=|>|<) *(?P<bound>-?[0-9.]+)|multiple of (?P<step>[0-9]+)"
                        r"|length (?P<len_op>>= *)?(?P<length>[0-9]+)|(?P<word>unique|nonempty)"
                        r"|(?P<kind>" + "|".join(PATH_KINDS) + "))$")
Check = Callable[[str, Any], Optional[str]]  # (key, value) -> what is wrong, or None


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, str):
        yield value


def _each(value: Any, what: str) -> str:
    return f"every number of {what}" if isinstance(value, list) else what


def _compare(op: str, bound: float) -> Check:
    def check(key: str, value: Any) -> Optional[str]:
        if all(_COMPARE[op](v, bound) for v in _numbers(value)):
            return None
        return f"{_each(value, key)} must be {op} {bound:g}, got {value!r}"
    return check


def _multiple(step: int) -> Check:
    def check(key: str, value: Any) -> Optional[str]:
        if all(v % step == 0 for v in _numbers(value)):
            return None
        return f"{_each(value, key)} must be a multiple of {step}, got {value!r}"
    return check


def _length(at_least: bool, n: int) -> Check:
    def check(key: str, value: Any) -> Optional[str]:
        if not isinstance(value, list) or (len(value) >= n if at_least else len(value) == n):
            return None
        return f"{key} must have {'at least ' if at_least else ''}{n} items, got {len(value)}: {value!r}"
    return check


def _unique(key: str, value: Any) -> Optional[str]:
    seen = [repr(v) for v in value] if isinstance(value, list) else []
    twice = sorted({v for v in seen if seen.count(v) > 1})
    return f"{key} lists {', '.join(twice)} more than once" if twice else None


def _nonempty(key: str, value: Any) -> Optional[str]:
    if all(text.strip() for text in _texts(value)):
        return None
    return f"{key} must not be blank{' (an item is)' if isinstance(value, list) else ''}, got {value!r}"


def _path(kind: str) -> Check:
    def check(key: str, value: Any) -> Optional[str]:
        if not isinstance(value, str) or not value:
            return None
        if kind == "output file":
            return f"{key} {value} is a folder; give a file name" if os.path.isdir(value) else None
        if kind == "output dir":
            return f"{key} {value} is a file, not a folder" if os.path.isfile(value) else None
        if kind == "source" and value.isdigit():
            return None
        if not os.path.exists(value):
            return f"{key} not found: {value}"
        if kind == "file" and not os.path.isfile(value):
            return f"{key} {value} is a folder, not a file"
        if kind == "dir" and not os.path.isdir(value):
            return f"{key} {value} is a file, not a folder"
        return None
    return check


def parse_rule(key: str, rule: str) -> List[Check]:
    """The value checks of one rule text (see the module docstring); its path kind is path_kind's."""
    checks: List[Check] = []
    for condition in (c.strip() for c in rule.split(",")):
        m = _CONDITION.match(condition)
        if m is None:
            raise ValueError(f"default_config.yaml: {key}: unknown check {condition!r}")
        if m["op"]:
            checks.append(_compare(m["op"], float(m["bound"])))
        elif m["step"]:
            checks.append(_multiple(int(m["step"])))
        elif m["length"]:
            checks.append(_length(bool(m["len_op"]), int(m["length"])))
        elif m["word"]:
            checks.append(_unique if m["word"] == "unique" else _nonempty)
    return checks


def path_kind(rule: str) -> Optional[str]:
    """The path kind a rule names, or None."""
    kinds = [c.strip() for c in rule.split(",") if c.strip() in PATH_KINDS]
    return kinds[0] if kinds else None


def _consistent(values: Dict[str, Any]) -> Optional[str]:
    """What is wrong between keys that contradict each other, or None."""
    if not values.get("is_distributed", False):
        for key, alone in (("rank", 0), ("group_size", 1)):
            if values.get(key, alone) != alone:
                return f"{key} {values[key]} needs is_distributed True (the runtime gives each process its rank " \
                       f"and the group size); without it a run is one process, rank 0 of 1"
    scale = values.get("jitter_scale", [])
    if len(scale) == 2 and scale[0] > scale[1]:
        return f"jitter_scale must be [low, high] with low <= high, got {scale!r}"
    return None


def check_values(values: Dict[str, Any], rules: Dict[str, str], source: Callable[[str], str],
                 check_paths: bool = True) -> None:
    """Raise a UserError naming the first key whose value breaks its rule (and where the value came from), or the
    first pair of keys that contradict each other. Paths are checked only with `check_paths`."""
    for key, rule in rules.items():
        if key not in values:
            continue
        kind = path_kind(rule) if check_paths else None
        for check in parse_rule(key, rule) + ([_path(kind)] if kind else []):
            problem = check(key, values[key])
            if problem:
                raise UserError(f"{problem} ({source(key)})")
    problem = _consistent(values)
    if problem:
        raise UserError(problem)


def absolute_args(argv: Sequence[str], rules: Dict[str, str], cwd: str) -> List[str]:
    """The launchers' arguments with every path option (`--key value` or `--key=value` of a path kind, and
    --config_path) made absolute against `cwd`, so that they mean the same after the launcher changes folder."""
    path_keys = {key for key, rule in rules.items() if path_kind(rule)} | {"config_path"}
    out: List[str] = []
    pending = ""
    for arg in argv:
        if pending:
            out.append(_absolute(arg, pending, rules, cwd))
            pending = ""
            continue
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key in path_keys and eq:
            out.append(f"--{key}={_absolute(value, key, rules, cwd)}")
            continue
        if key in path_keys:
            pending = key
        out.append(arg)
    return out


def _absolute(value: str, key: str, rules: Dict[str, str], cwd: str) -> str:
    if not value or os.path.isabs(value) or (path_kind(rules.get(key, "")) == "source" and value.isdigit()):
        return value
    return os.path.normpath(os.path.join(cwd, value))


def main() -> None:
    """`python -m model_utils.checks --absolute ARGS...`: ARGS with path options made absolute, one a line
    (NUL-separated with --null), for the bash launchers."""
    from model_utils.config import value_rules
    argv = sys.argv[1:]
    if not argv or argv[0] != "--absolute":
        raise UserError("usage: python -m model_utils.checks --absolute [--null] ARGS...")
    null = len(argv) > 1 and argv[1] == "--null"
    args = absolute_args(argv[2 if null else 1:], value_rules(), os.getcwd())
    sys.stdout.write("".join(a + ("\0" if null else "\n") for a in args))


if __name__ == "__main__":
    run_cli(main)

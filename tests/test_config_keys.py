"""Every key of default_config.yaml, given a wrong-typed and an out-of-range value, is one `error:` line naming the
key: through the config loader in this process for every key, and through every entry script (as a process) for
a sample of each kind, plus the values only a script can judge (anchor indices, the runtime's ranks)."""
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, TINY_CFG, run_script
from model_utils.config import DEFAULT_CONFIG, load_config
from src.errors import UserError
from test_cli_errors import assert_clean_error

DEFAULTS, _, CHOICES, RULES = list(yaml.safe_load_all(open(DEFAULT_CONFIG, encoding="utf-8")))
FREE_TEXT = {  # keys no value of their type is wrong for, and why
    "data_url": "any text is an OBS path; ModelArts' copy judges it",
    "train_url": "any text is an OBS path; ModelArts' copy judges it",
    "checkpoint_url": "any text is an OBS path; ModelArts' copy judges it",
}


def wrong_typed(key, tmp_path):
    """argv giving `key` a value of another type: text where a number, bool or list belongs; a list in a config
    file where text belongs (on the command line all text is text)."""
    default = DEFAULTS[key]
    if isinstance(default, str):
        path = tmp_path / "wrong.yaml"
        path.write_text(f"{key}: [1, 2]\n")
        return ["--config_path", str(path)]
    if isinstance(default, list) and default and isinstance(default[0], str):
        path = tmp_path / "wrong.yaml"
        path.write_text(f"{key}: 7\n")
        return ["--config_path", str(path)]
    return [f"--{key}", {bool: "maybe", int: "1.5", float: "x", list: "a,b"}[type(default)]]


def _item(default):
    return default[0] if default else 1


def out_of_range(key, tmp_path):
    """argv giving `key` a value of its type that its rule or choices refuse, or None (bools: two values only)."""
    default = DEFAULTS[key]
    if key in CHOICES:
        return [f"--{key}", "no_such_choice"]
    rule = RULES.get(key)
    if rule is None:
        return None
    first = rule.split(",")[0].strip()
    m = re.match(r"(>=|<=|!=|>|<) *(-?[0-9.]+)$", first)
    if m:
        bound = float(m[2])
        step = 1 if isinstance(_item(default) if isinstance(default, list) else default, int) else 0.5
        bad = {">=": bound - step, "<=": bound + step, ">": bound, "<": bound, "!=": bound}[m[1]]
        bad = int(bad) if step == 1 else bad
        if isinstance(default, list):
            items = [list(_item(default)[:-1]) + [bad]] if isinstance(_item(default), list) else [bad] + default[1:]
            return [f"--{key}={items!s}".replace(" ", "")]
        return [f"--{key}={bad}"]
    if first.startswith("multiple of"):
        return [f"--{key}", str(int(first.split()[-1]) + 1)]
    if first == "nonempty":
        return [f"--{key}=[' ', 'x']"] if isinstance(default, list) else [f"--{key}", " "]
    if first in ("file", "dir", "path", "source"):
        return [f"--{key}", str(tmp_path / "missing")]
    if first == "output dir":
        (tmp_path / "a_file").write_text("")
        return [f"--{key}", str(tmp_path / "a_file")]
    if first == "output file":
        return [f"--{key}", str(tmp_path)]
    raise AssertionError(f"no out-of-range value for {key}'s rule {rule!r}")


def test_every_key_has_a_check_or_says_why_not():
    """Every key not a bool is chosen from choices, checked by a rule, or named free text with the reason; every
    rule and choice names a real key."""
    for key, default in DEFAULTS.items():
        assert isinstance(default, bool) or key in CHOICES or key in RULES or key in FREE_TEXT, key
    assert set(RULES) <= set(DEFAULTS) and set(CHOICES) <= set(DEFAULTS) and set(FREE_TEXT) <= set(DEFAULTS)


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_the_loader_refuses_each_keys_bad_values_in_one_line(key, tmp_path):
    cases = [wrong_typed(key, tmp_path)] + [a for a in [out_of_range(key, tmp_path)] if a]
    assert cases
    for argv in cases:
        with pytest.raises(UserError) as e:
            load_config(argv)
        message = str(e.value)
        assert "\n" not in message and re.search(rf"\b{key}\b", message), (argv, message)


SCRIPTS = {  # entry script -> the arguments that make an otherwise good run of it
    "train.py": ["--config_path", TINY_CFG],
    "eval.py": ["--config_path", TINY_CFG],
    "predict.py": ["--config_path", TINY_CFG],
    "export.py": ["--config_path", TINY_CFG],
    "convert_weight.py": ["--config_path", TINY_CFG],
    "benchmark.py": ["--config_path", TINY_CFG],
    "postprocess.py": ["--config_path", TINY_CFG],
    "src.data.anchors": ["--config_path", TINY_CFG],
}
SAMPLE = [("per_batch_size", "wrong type"), ("testing_shape", "out of range"), ("data_dir", "out of range"),
          ("backbone_layers", "out of range"), ("rank", "out of range"), ("labels", "wrong type")]


def run(script, *args):
    if script.endswith(".py"):
        return run_script(script, *args, check=False)
    return run_script(sys.executable, "-m", script, *args, check=False)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_entry_script_turns_a_bad_value_into_one_line(script, tmp_path):
    """One process per script, whose value depends on the script so that each kind of check is seen in each."""
    key, kind = SAMPLE[sorted(SCRIPTS).index(script) % len(SAMPLE)]
    argv = wrong_typed(key, tmp_path) if kind == "wrong type" else out_of_range(key, tmp_path)
    proc = run(script, *SCRIPTS[script], *argv)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert_clean_error(proc, key)


@pytest.mark.parametrize("argv, message", [
    (["--anchor_mask", "[[3,4,99],[0,1,2]]"], "anchor_mask [[3, 4, 99], [0, 1, 2]] refers to anchors outside"),
    (["--anchor_mask", "[[0,1,2]]"], "yolov3_tiny has 2 output scales but anchor_mask has 1 entries"),
    (["--rank", "1"], "rank 1 needs is_distributed True"),
    (["--group_size", "4"], "group_size 4 needs is_distributed True"),
    (["--is_distributed", "True"], "is_distributed=1 but the collective runtime did not start"),
])
def test_what_only_the_model_or_runtime_judges(argv, message, tmp_path):
    """convert_weight.py builds the model before it reads a file; train.py starts the runtime first."""
    (tmp_path / "w.weights").write_bytes(b"")
    proc = run_script("convert_weight.py", "--config_path", TINY_CFG, "--input_file", str(tmp_path / "w.weights"),
                      "--output_file", str(tmp_path / "w.ckpt"), *argv, check=False) if "anchor_mask" in argv[0] \
        else run_script("train.py", "--config_path", TINY_CFG, *argv, check=False)
    assert_clean_error(proc, message)


def test_a_group_size_the_runtime_does_not_have_is_an_error(tmp_path):
    """--group_size 4 on 1 msrun worker: the user's number contradicts the run, so it stops instead of training a
    quarter of the data."""
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["msrun", "--worker_num=1", "--local_worker_num=1", "--master_port=8157",
                           f"--log_dir={tmp_path / 'logs'}", "--join=True", os.path.join(REPO, "train.py"),
                           "--config_path", TINY_CFG, "--is_distributed", "True", "--group_size", "4"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "logs" / "worker_0.log").read_text()
    assert proc.returncode != 0
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert errors == ["error: group_size 4 (command line) is not the runtime's 1: the launcher gives each process "
                      "its rank and the group size; leave group_size out"], log[-2000:]
    assert "Traceback" not in log

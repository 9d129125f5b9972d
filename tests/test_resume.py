"""Training is bit-reproducible, and runs that are killed and resumed end exactly where the run left alone ends.

At the README's sizes: yolov3-tiny at 320, batch 8, the default data workers, every core, 3 epochs of 32
synthetic images (4 steps an epoch), with the tiny config (AdamWeightDecay, from scratch) and the fine-tuning
config (momentum SGD, from the tiny run's weights): one process (a second run; SIGKILL in epoch 2; SIGTERM), and
2 CPU workers through the launcher (SIGKILL in epoch 2); the tiny config in bf16 (SIGKILL in epoch 2) where the CPU
has bf16 arithmetic. Every tensor of the final checkpoint, optimiser state included, is equal to the bit, and so are
the state checksums the logs print.
"""
import os
import re
import signal
import subprocess
import sys
import time

import mindspore as ms
import numpy as np
import pytest

from conftest import REPO, TINY_CFG, shapes_set
from src.cpu.precision import has_bf16, kernels_isa
from test_cli_errors import assert_clean_error

BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
LAUNCHER = os.path.join(REPO, "scripts", "run_distribute_train_cpu.sh")
FINETUNE_CFG = os.path.join(REPO, "configs", "yolov3_tiny_finetune.yaml")
CHECKSUM = re.compile(r"saved \S+/(\d+-\d+_\d+\.ckpt), state checksum ([0-9a-f]{16})")
OPTIMISER_STATE = {"tiny": ("adam_m", "adam_v"), "tiny_bf16": ("adam_m", "adam_v"),
                   "finetune": ("moments",)}  # the finetune recipe averages (ema.)


@pytest.fixture(scope="module")
def shapes32(tmp_path_factory):
    return shapes_set(tmp_path_factory, 32, 2, 320, 24, 120)


@pytest.fixture(scope="module")
def shapes16(tmp_path_factory):
    return shapes_set(tmp_path_factory, 16, 2, 64, 16, 30)


def train(*args, check=True):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def steps_saved(folder):
    return sorted(int(f.rsplit("_", 1)[1][:-5]) for f in os.listdir(folder) if f.endswith(".ckpt"))


def checksums(log: str):
    """{checkpoint file name: the state checksum logged when it was saved}."""
    return dict(CHECKSUM.findall(log))


def assert_identical_state(path, baseline_path, step, optimiser_state):
    """Every tensor of the checkpoint at `path` equals the baseline's to the bit."""
    got, want = ms.load_checkpoint(path), ms.load_checkpoint(baseline_path)
    assert int(got["global_step"].asnumpy()) == int(want["global_step"].asnumpy()) == step
    tensors = [n for n, v in want.items() if isinstance(v, ms.Parameter)]
    assert len(tensors) > 50
    assert all(any(n.startswith(f"optimizer.{m}.") for n in tensors) for m in optimiser_state)
    if optimiser_state == OPTIMISER_STATE["finetune"]:  # the fine-tuning recipe's averaged weights resume too
        assert sum(n.startswith("ema.") for n in tensors) > 50
    assert set(tensors) == {n for n, v in got.items() if isinstance(v, ms.Parameter)}
    differing = [n for n in tensors if not np.array_equal(got[n].asnumpy(), want[n].asnumpy())]
    diff = max(float(np.abs(got[n].asnumpy().astype(np.float64) - want[n].asnumpy()).max()) for n in tensors)
    assert not differing, f"{len(differing)} of {len(tensors)} tensors differ, max |diff| {diff}: {differing[:5]}"


def process_tree(root):
    """The ids of `root` and all its descendants (msrun starts its workers in sessions of their own)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def start_and_stop_at(argv, log_file, line, sig, cwd, env=None):
    """Start argv; send `sig` to it and every process it started once `line` shows in log_file (None:
    its stdout). Returns the process after it ended."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE if log_file is None else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    if log_file is None:
        for out in proc.stdout:
            if line in out:
                break
    else:
        while not (os.path.exists(log_file) and line in open(log_file).read()):
            assert proc.poll() is None and time.time() < deadline, f"{line} never appeared in {log_file}"
            time.sleep(0.05)
    for pid in reversed(process_tree(proc.pid)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    proc.communicate(timeout=300)
    return proc


class Runs:
    """The runs left alone, one per recipe, made once for the module: (train.py options, final checkpoint, log)."""

    def __init__(self, data, folder):
        self.data, self.folder, self.done = data, folder, {}

    def args(self, recipe, out, *extra):
        start = ["--config_path", FINETUNE_CFG, "--resume_yolo", self.final("tiny")] if recipe == "finetune" else \
            ["--config_path", TINY_CFG, *(["--precision", "bf16"] if recipe == "tiny_bf16" else [])]
        return ["--data_dir", self.data, "--training_shape", "320", "--per_batch_size", "8", "--max_epoch", "3",
                "--ckpt_path", out, "--log_interval", "1", *start, *extra]

    def final(self, recipe):
        return self.run(recipe)[0]

    def run(self, recipe):
        if recipe not in self.done:
            out = os.path.join(self.folder, recipe)
            proc = train(*self.args(recipe, out))
            assert steps_saved(os.path.join(out, "ckpt_0")) == [4, 8, 12]
            self.done[recipe] = (os.path.join(out, "ckpt_0", "0-3_12.ckpt"), proc.stdout)
        return self.done[recipe]


@pytest.fixture(scope="module")
def runs(shapes32, tmp_path_factory):
    return Runs(shapes32, str(tmp_path_factory.mktemp("left_alone")))


@pytest.mark.parametrize("recipe", ["tiny", "finetune"])
def test_two_runs_of_the_same_command_are_bit_identical(runs, recipe, tmp_path):
    baseline, log = runs.run(recipe)
    out = str(tmp_path / "run")
    again = train(*runs.args(recipe, out))
    assert_identical_state(os.path.join(out, "ckpt_0", "0-3_12.ckpt"), baseline, 12, OPTIMISER_STATE[recipe])
    sums = checksums(log)
    assert sorted(sums) == ["0-1_4.ckpt", "0-2_8.ckpt", "0-3_12.ckpt"] and checksums(again.stdout) == sums
    assert len(set(sums.values())) == 3  # the checksum follows the state


def test_the_number_of_data_workers_does_not_change_the_weights(runs, tmp_path):
    _, log = runs.run("tiny")
    one_worker = train(*runs.args("tiny", str(tmp_path / "run"), "--num_parallel_workers", "1"))
    assert checksums(one_worker.stdout) == checksums(log)


@pytest.mark.parametrize("recipe", ["tiny", "finetune", "tiny_bf16"])
def test_sigkill_in_epoch_2_then_resume(runs, recipe, tmp_path):
    if recipe == "tiny_bf16" and not has_bf16(kernels_isa()):
        pytest.skip("this CPU (or the kernels' oneDNN) has no bf16 arithmetic (AVX512-BF16 or AMX-BF16)")
    baseline, log = runs.run(recipe)
    out = str(tmp_path / "run")
    argv = [sys.executable, os.path.join(REPO, "train.py"), *runs.args(recipe, out)]
    proc = start_and_stop_at(argv, None, "iter[6]", signal.SIGKILL, REPO)
    assert proc.returncode == -signal.SIGKILL
    assert steps_saved(os.path.join(out, "ckpt_0")) == [4]  # killed inside epoch 2
    resumed = train(*runs.args(recipe, out, "--resume", "True"))
    assert f"at global_step 4, state checksum {checksums(log)['0-1_4.ckpt']}" in resumed.stdout
    assert_identical_state(os.path.join(out, "ckpt_0", "0-3_12.ckpt"), baseline, 12, OPTIMISER_STATE[recipe])
    assert checksums(resumed.stdout)["0-3_12.ckpt"] == checksums(log)["0-3_12.ckpt"]
    if recipe == "tiny_bf16":  # it ran in bf16: other weights than the fp32 run's
        assert "precision bf16" in resumed.stdout
        assert checksums(log)["0-3_12.ckpt"] != checksums(runs.run("tiny")[1])["0-3_12.ckpt"]


@pytest.mark.parametrize("recipe", ["tiny", "finetune"])
def test_sigterm_then_resume(runs, recipe, tmp_path):
    baseline, _ = runs.run(recipe)
    out = str(tmp_path / "run")
    argv = [sys.executable, os.path.join(REPO, "train.py"), *runs.args(recipe, out)]
    proc = start_and_stop_at(argv, None, "iter[6]", signal.SIGTERM, REPO)
    assert proc.returncode == 130
    saved = steps_saved(os.path.join(out, "ckpt_0"))
    assert saved[0] == 4 and 6 <= saved[-1] < 8  # the SIGTERM checkpoint, mid epoch 2
    resumed = train(*runs.args(recipe, out, "--resume", "True"))
    assert f"at global_step {saved[-1]}" in resumed.stdout
    assert_identical_state(os.path.join(out, "ckpt_0", "0-3_12.ckpt"), baseline, 12, OPTIMISER_STATE[recipe])


def test_resuming_with_ema_a_run_without_it_is_a_clear_error(shapes16, tmp_path):
    out = str(tmp_path / "run")
    args = ["--config_path", TINY_CFG, "--data_dir", shapes16, "--training_shape", "64", "--per_batch_size", "2",
            "--ckpt_path", out, "--num_parallel_workers", "1", "--max_epoch", "1"]
    train(*args, "--ema", "False")
    proc = train(*args, "--ema", "True", "--resume", "True", check=False)
    assert_clean_error(proc, "has no averaged weights (ema.", "resume it with --ema False")


def launch(cwd, port, *args, check=True):
    proc = subprocess.run(["bash", LAUNCHER, *args], cwd=cwd, env=dict(ENV, MASTER_PORT=str(port)),
                          capture_output=True, text=True, timeout=900)
    if check:
        logs = os.path.join(cwd, "train_parallel")
        tails = "".join(open(os.path.join(logs, f)).read()[-2000:] for f in sorted(os.listdir(logs))
                        if f.startswith("worker_")) if os.path.isdir(logs) else ""
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + tails
    return proc


def dist_args(data, shape, batch, *extra):
    return [data, "2", "--config_path", TINY_CFG, "--training_shape", str(shape), "--per_batch_size", str(batch),
            "--log_interval", "1", *extra]


def test_two_workers_killed_in_epoch_2_then_resumed(shapes32, tmp_path):
    """2 ranks of 16 images each: 2 steps an epoch."""
    base, run = tmp_path / "base", tmp_path / "run"
    base.mkdir()
    run.mkdir()
    launch(str(base), 8141, *dist_args(shapes32, 320, 8, "--max_epoch", "3"))
    final = str(base / "train_parallel" / "outputs" / "ckpt_0" / "0-3_6.ckpt")

    argv = ["bash", LAUNCHER, *dist_args(shapes32, 320, 8, "--max_epoch", "3")]
    start_and_stop_at(argv, str(run / "train_parallel" / "worker_0.log"), "iter[3]", signal.SIGKILL, str(run),
                      dict(ENV, MASTER_PORT="8143"))
    ckpt_dir = run / "train_parallel" / "outputs" / "ckpt_0"
    assert steps_saved(ckpt_dir) == [2]  # killed inside epoch 2
    launch(str(run), 8145, *dist_args(shapes32, 320, 8, "--max_epoch", "3", "--resume", "True"))
    for rank in (0, 1):
        assert "ckpt_0/0-1_2.ckpt at global_step 2" in (run / "train_parallel" / f"worker_{rank}.log").read_text()
    assert_identical_state(str(ckpt_dir / "0-3_6.ckpt"), final, 6, OPTIMISER_STATE["tiny"])
def test_launcher_keeps_the_run_and_resumes_it_on_both_ranks(shapes16, tmp_path):
    """Default is_save_on_master (rank 0 alone saves) and ckpt_path: 1 epoch, then on to 2 with --resume."""
    launch(str(tmp_path), 8147, *dist_args(shapes16, 64, 2, "--num_parallel_workers", "1", "--max_epoch", "1"))
    run = tmp_path / "train_parallel"
    first = run / "outputs" / "ckpt_0" / "0-1_4.ckpt"
    assert first.is_file() and not (run / "outputs" / "ckpt_1").exists()

    again = launch(str(tmp_path), 8149, *dist_args(shapes16, 64, 2, "--num_parallel_workers", "1", "--max_epoch", "1"), check=False)
    assert_clean_error(again, "holds checkpoints of an earlier run", "--resume True")
    assert first.is_file() and (run / "worker_0.log").is_file()

    launch(str(tmp_path), 8151, *dist_args(shapes16, 64, 2, "--num_parallel_workers", "1", "--max_epoch", "2", "--resume", "True"))
    for rank in (0, 1):
        log = (run / f"worker_{rank}.log").read_text()
        assert "ckpt_0/0-1_4.ckpt at global_step 4" in log and "training done: 8 iterations" in log
        assert "training done: 4 iterations" in (run / f"worker_{rank}.log.1").read_text()  # the first run's log
    assert first.is_file() and (run / "outputs" / "ckpt_0" / "0-2_8.ckpt").is_file()


def test_standalone_launcher_refuses_to_start_over_a_run(shapes16, tmp_path):
    """./train/ holding a checkpoint: a new launch stops with nothing touched; --resume True goes on in it."""
    run = tmp_path / "train"
    ckpt = run / "outputs" / "ckpt_0" / "0-1_8.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"earlier run")
    (run / "log.txt").write_text("earlier log")
    script = os.path.join(REPO, "scripts", "run_standalone_train_gpu.sh")
    proc = subprocess.run(["bash", script, shapes16], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert_clean_error(proc, f"{run} holds checkpoints of an earlier run", "--resume True")
    assert sorted(p.name for p in run.iterdir()) == ["log.txt", "outputs"] and ckpt.read_bytes() == b"earlier run"
    for flag in (["--resume", "True"], ["--resume=true"]):
        proc = subprocess.run(["bash", script, shapes16, *flag, "--max_epoch", "1"], cwd=tmp_path, env=ENV,
                              capture_output=True, text=True, timeout=300)
        assert f"log: {run}/log.txt" in proc.stdout  # it started train.py in ./train (which then needs a GPU)
    assert (run / "log.txt.1").read_text() == "earlier log" and (run / "log.txt.2").is_file()
    assert ckpt.read_bytes() == b"earlier run"

"""ModelArts: copy data and checkpoints in from OBS before a run and results out after it (moxing).

With enable_modelarts, data_url is copied to data_path and becomes data_dir,
checkpoint_url is copied to load_path (relative weight paths are then taken
from there), output folders are put under output_path, and output_path is
copied to train_url however the run ends (done, error, Ctrl-C, SIGTERM), by
the rank that saves. On each node only one process copies in; the others wait
for its marker file, named for this job (see job_token), so that a marker an
earlier job left in the same folder is ignored.
"""
import glob
import os
import signal
import threading
import time
from typing import Any, Callable

from src.errors import UserError

WEIGHT_KEYS = ("pretrained", "pretrained_backbone", "resume_yolo", "ckpt_file")
OUTPUT_KEYS = ("ckpt_path", "eval_dir", "output_dir", "file_name")


def _moxing():
    try:
        import moxing
    except ImportError:
        raise UserError("enable_modelarts=True needs the moxing package, which ModelArts provides; "
                        "it is not installed here") from None
    return moxing


def _copier(config) -> bool:
    """The one process per node that copies (local rank 0)."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK_ID", config.rank))) % 8 == 0


MARKER = ".modelarts_sync_done"


def job_token() -> str:
    """What every process of this job, and no other job, shares: YOLO_JOB_TOKEN (the scripts/ launchers
    set one per launch), else the launching parent process (its pid and start time)."""
    token = os.environ.get("YOLO_JOB_TOKEN")
    if token:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in token)
    ppid = os.getppid()
    try:
        with open(f"/proc/{ppid}/stat", encoding="utf-8") as f:
            started = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "0"
    return f"ppid{ppid}-{started}"


def sync(mox, src: str, dst: str, copier: bool, timeout_s: float = 3600) -> None:
    """Copy src to dst on the copier; the other processes wait for this job's marker file."""
    marker = os.path.join(dst, f"{MARKER}.{job_token()}")
    if copier:
        os.makedirs(dst, exist_ok=True)
        for stale in glob.glob(os.path.join(glob.escape(dst), MARKER + "*")):
            if stale != marker:
                os.remove(stale)
        mox.file.copy_parallel(src, dst)
        with open(marker, "w", encoding="utf-8") as f:
            f.write(src)
        return
    start = time.time()
    while not os.path.exists(marker):
        if time.time() - start > timeout_s:
            raise UserError(f"timed out waiting for {src} to be copied to {dst}")
        time.sleep(1)


def run_with_modelarts(config, main: Callable[[Any], None]) -> None:
    """Run `main(config)`; when enable_modelarts, wrapped in the ModelArts copies and given the config with the
    local paths they resolve (data_dir, the weights, the outputs)."""
    if not config.enable_modelarts:
        main(config)
        return
    mox = _moxing()
    copier = _copier(config)
    resolved = {}
    if config.data_url:
        sync(mox, config.data_url, config.data_path, copier)
        resolved["data_dir"] = config.data_path
    if config.checkpoint_url:
        sync(mox, config.checkpoint_url, config.load_path, copier)
        resolved.update({key: os.path.join(config.load_path, getattr(config, key)) for key in WEIGHT_KEYS
                         if getattr(config, key) and not os.path.isabs(getattr(config, key))})
    resolved.update({key: os.path.join(config.output_path, getattr(config, key)) for key in OUTPUT_KEYS
                     if not os.path.isabs(getattr(config, key))})
    config = config.with_values(**resolved)
    os.makedirs(config.output_path, exist_ok=True)
    saver = config.rank == 0 or not config.is_save_on_master
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main_thread else None
    try:
        main(config)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if config.train_url and saver:
            mox.file.copy_parallel(config.output_path, config.train_url)


def _interrupt(*_) -> None:
    """SIGTERM (preemption) unwinds like Ctrl-C, so that the outputs are still copied out."""
    raise KeyboardInterrupt

"""Atomic writes: a reader never sees a half-written file, and a failed write keeps the old one."""
import contextlib
import json
import os
import tempfile
from typing import Any, Iterator


def cache_dir() -> str:
    """Where fetched weights and built kernels are kept (YOLO_CACHE_DIR, else ~/.cache/yolov3-mindspore)."""
    return os.environ.get("YOLO_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "yolov3-mindspore"))


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """A temporary name beside `path` (ending in `suffix`, for writers that pick the format by it) to write to;
    it becomes `path` when the block ends without an error, and is removed otherwise."""
    tmp = temp_path_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def temp_path_beside(path: str, suffix: str = "") -> str:
    """A fresh temporary name in `path`'s folder, for writers that take a file name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp" + suffix)
    os.close(fd)
    os.remove(tmp)
    return tmp

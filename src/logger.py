"""Console (and optional file) logging in the model zoo's format."""
import logging
import os
import sys
from typing import Optional


def get_logger(name: str = "yolov3", log_dir: Optional[str] = None, rank: int = 0) -> logging.Logger:
    logger = logging.getLogger(f"{name}.{rank}")
    if logger.handlers:
        return logger
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s:%(levelname)s:%(message)s")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        handler = logging.FileHandler(os.path.join(log_dir, f"log_rank{rank}.txt"))
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger

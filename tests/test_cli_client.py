"""The HTTP client against small local HTTP servers: redirects to storage, paging, error bodies.

The real server streams local artifacts itself; S3 deployments answer with a 307 to a presigned
URL on another host. That path is exercised here with two real HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from contextlib import contextmanager

import pytest

from conda_store_jupyter.cli._client import Client
from conda_store_jupyter.cli._config import resolve_config
from conda_store_jupyter.cli._errors import CLIError

PAYLOAD = b"conda-pack bytes " * 50_000  # ~850 KB: several chunks


@contextmanager
def http_server(routes, host="127.0.0.1"):
    """Serve ``routes[path](handler) -> (status, headers, body)`` on a free port of ``host``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            handler = routes.get(self.path.split("?")[0])
            status, headers, body = handler(self) if handler else (404, {}, b'{"status":"error","message":"nope"}')
            self.send_response(status)
            for k, v in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.do_GET()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _config(url):
    return resolve_config(url=url, environ={"CONDA_STORE_TOKEN": "secret-token"})


def test_archive_redirect_to_other_origin_drops_the_token(tmp_path):
    seen = {}

    def presigned(h):
        seen["auth"] = h.headers.get("Authorization")
        return 200, {"Content-Type": "application/gzip"}, PAYLOAD

    with http_server({"/bucket/archive.tar.gz": presigned}) as storage:
        def archive(h):
            seen["api_auth"] = h.headers.get("Authorization")
            return 307, {"Location": f"{storage}/bucket/archive.tar.gz?X-Amz-Signature=abc"}, b""

        with http_server({"/api/v1/build/5/archive/": archive}) as api:
            progress = []
            with Client(_config(api)) as client:
                result = client.download(5, "archive", tmp_path / "a.tar.gz", lambda d, t: progress.append((d, t)))
    assert seen == {"api_auth": "Bearer secret-token", "auth": None}
    assert result.sha256 == hashlib.sha256(PAYLOAD).hexdigest() and result.size == len(PAYLOAD)
    assert (tmp_path / "a.tar.gz").read_bytes() == PAYLOAD and progress[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert not list(tmp_path.glob(".*part"))


def test_failed_download_leaves_no_partial_file(tmp_path):
    with http_server({"/api/v1/build/5/logs/": lambda h: (403, {}, b'{"status":"error","message":"request not authorized"}')}) as api:
        with Client(_config(api)) as client, pytest.raises(CLIError, match="permission denied: request not authorized"):
            client.download(5, "logs", tmp_path / "x.log")
    assert list(tmp_path.iterdir()) == []


def test_paginate_walks_pages_and_follows_slash_redirect():
    items = [{"id": i} for i in range(1, 8)]

    def page(h):
        from urllib.parse import parse_qs, urlsplit

        q = parse_qs(urlsplit(h.path).query)
        n, size = int(q["page"][0]), int(q["size"][0])
        body = {"status": "ok", "data": items[(n - 1) * size : n * size], "page": n, "size": size, "count": len(items)}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def redirect(h):
        return 307, {"Location": h.path.replace("/api/v1/namespace", "/api/v1/namespace/", 1)}, b""

    with http_server({"/api/v1/namespace/": page, "/api/v1/namespace": redirect}) as api:
        with Client(_config(api)) as client:
            assert client.paginate("/api/v1/namespace/", size=3) == items
            assert client.paginate("/api/v1/namespace", size=100) == items


def test_non_json_answer_is_explained():
    with http_server({"/api/v1/permission/": lambda h: (200, {}, b"<html>login</html>")}) as api:
        with Client(_config(api)) as client, pytest.raises(CLIError, match="did not answer with JSON"):
            client.permissions()


# ------------------------------------------------------------------------------ API redirects


def _recorder(seen):
    def handler(h):
        seen.append((h.command, h.path, h.headers.get("Authorization"), getattr(h, "body", b"")))
        return 200, {"Content-Type": "application/json"}, b'{"status":"ok","data":{"token":"stolen"}}'
    return handler


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("other", ["127.0.0.2", "other port"])
def test_api_redirect_to_another_origin_is_refused_without_sending_the_token(status, other):
    """/tmp/rvw/redir.py: a 307 from the API to another host used to replay the token and body."""
    seen = []
    with http_server({"/steal": _recorder(seen)}, host="127.0.0.1" if other == "other port" else other) as evil:
        with http_server({"/api/v1/token/": lambda h: (status, {"Location": f"{evil}/steal"}, b"")}) as api:
            with Client(_config(api)) as client, pytest.raises(CLIError) as err:
                client.create_token({"role_bindings": {"a/*": ["viewer"]}})
    message = str(err.value)
    assert seen == [] and "\n" not in message
    assert f"redirected POST /api/v1/token/ to another origin ({evil})" in message
    assert "secret-token" not in message


def test_api_redirect_on_the_same_origin_is_followed_with_the_token():
    seen = []
    routes = {"/api/v1/token/": lambda h: (307, {"Location": "/moved/token/"}, b""), "/moved/token/": _recorder(seen)}
    with http_server(routes) as api:
        with Client(_config(api)) as client:
            assert client.create_token({"x": 1}) == "stolen"
    assert seen == [("POST", "/moved/token/", "Bearer secret-token", b'{"x":1}')]


def test_303_to_the_same_origin_becomes_a_get_without_body():
    seen = []
    routes = {"/api/v1/token/": lambda h: (303, {"Location": "/done"}, b"") if h.command == "POST" else (404, {}, b""),
              "/done": _recorder(seen)}
    with http_server(routes) as api:
        with Client(_config(api)) as client:
            client.create_token({"x": 1})
    assert seen == [("GET", "/done", "Bearer secret-token", b"")]


def test_redirect_loop_is_a_clear_error():
    with http_server({"/api/v1/permission/": lambda h: (307, {"Location": "/api/v1/permission/"}, b"")}) as api:
        with Client(_config(api)) as client, pytest.raises(CLIError, match="too many redirects"):
            client.permissions()

"""One small JSON GET with ``http.client``, for the cached ``run`` path.

``conda-store run alice/ml`` must ask the server which build is current, and what exactly that
build is, even when it is already unpacked locally. Importing httpx costs ~100 ms, more than the whole budget of a cached
run, so this single request uses the standard library. Error wording is shared with the full
client (:mod:`._errors`) so users see the same messages either way.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlsplit

from ._config import Config
from ._errors import CLIError, connection_error, http_error
from ._run import Identity, build_identity
from ._uri import BuildURI

TYPE_CHECKING = False  # typing itself costs ~5 ms on the cached `run` path; mypy reads the name
if TYPE_CHECKING:
    from typing import Any

TIMEOUT = 30.0


def _plain_get(netloc: str, host: str, port: int, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One ``GET`` over plain HTTP/1.1 with ``Connection: close``: (status, body).

    ``http.client`` imports the ``email`` package to parse headers (~15 ms, a quarter of a cached
    run's budget); a JSON answer from our own server needs only the status line, the body and
    its framing (``Content-Length`` or chunked).
    """
    import socket

    lines = [f"GET {target} HTTP/1.1", f"Host: {netloc}", "Connection: close"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise CLIError(f"the {name} header would contain a line break (check CONDA_STORE_TOKEN)")
        lines.append(f"{name}: {value}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    chunks = []
    # An ASCII host as bytes: a str host makes getaddrinfo import the idna codec (~3 ms).
    address = host.encode("ascii") if host.isascii() else host
    with socket.create_connection((address, port), timeout=TIMEOUT) as sock:  # type: ignore[arg-type]
        sock.sendall(request)
        while data := sock.recv(65536):
            chunks.append(data)
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not sep or not version.startswith("HTTP/1.") or not code.isdigit():
        raise OSError("the answer is not an HTTP/1.1 response")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif fields.get("content-length", "").isdigit():
        length = int(fields["content-length"])
        if len(body) < length:
            raise OSError("the connection closed before the whole answer arrived")
        body = body[:length]
    return int(code), body


def _dechunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = data.find(b"\r\n", pos)
        size_text = data[pos:end].split(b";", 1)[0].strip() if end >= 0 else b""
        try:
            size = int(size_text, 16)
        except ValueError:
            raise OSError("malformed chunked answer") from None
        if size == 0:
            return b"".join(out)
        start = end + 2
        if len(data) < start + size:
            raise OSError("the connection closed before the whole answer arrived")
        out.append(data[start : start + size])
        pos = start + size + 2


def get_json(config: Config, path: str) -> Any:
    """GET ``<url><path>`` and return the decoded JSON, or raise CLIError."""
    url = config.url + path
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"Accept": "application/json", "User-Agent": "conda-store-jupyter-cli", **config.auth_headers()}
    try:
        if parts.scheme == "https":
            status, body = _tls_get(config, parts.netloc, target, headers)
        else:
            try:
                port = parts.port or 80
            except ValueError:
                raise CLIError(f"the conda-store URL {config.url!r} has an invalid port") from None
            status, body = _plain_get(parts.netloc, parts.hostname or "", port, target, headers)
    except OSError as exc:  # refused, reset, DNS, TLS, timeout (socket.timeout is an OSError)
        raise connection_error(config.url, exc) from None
    if status >= 300:
        # A redirect here means a login page (e.g. a hub service without API auth): an error.
        raise http_error(status, "GET", url, body, config.credentials)
    try:
        return json.loads(body)
    except ValueError:
        raise CLIError(f"the server at {config.url} did not answer with JSON (GET {url}); is it conda-store?") from None


def _tls_get(config: Config, netloc: str, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """HTTPS through ``http.client`` (``ssl`` dominates the cost there anyway)."""
    import http.client
    import ssl

    context = ssl.create_default_context()
    if not config.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(netloc, timeout=TIMEOUT, context=context)
    try:
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def environment_path(namespace: str, name: str) -> str:
    return f"/api/v1/environment/{quote(namespace, safe='')}/{quote(name, safe='')}/"


def _data(doc: Any, what: str, config: Config) -> dict[str, Any]:
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise CLIError(f"unexpected answer for {what} from {config.url}")
    return data


def _build(config: Config, build_id: int) -> dict[str, Any]:
    return _data(get_json(config, f"/api/v1/build/{int(build_id)}/"), f"build {build_id}", config)


def _environment(config: Config, namespace: str, name: str) -> dict[str, Any]:
    return _data(get_json(config, environment_path(namespace, name)), f"environment {namespace}/{name}", config)


def _current_build_id(env: dict[str, Any], namespace: str, name: str) -> int:
    build_id = env.get("current_build_id")
    if build_id is None:
        raise CLIError(f"environment {namespace}/{name} has no completed build yet (try 'conda-store wait {namespace}/{name}')")
    return int(build_id)


def current_build_id(config: Config, namespace: str, name: str) -> int:
    """The current build id of ``namespace/name`` (one light request)."""
    return _current_build_id(_environment(config, namespace, name), namespace, name)


def resolve_light(config: Config, uri: BuildURI) -> tuple[int, Identity] | None:
    """The build id of ``uri`` and the server's identity of that build; None if the full client must.

    The identity is what makes a cached unpack trustworthy (ids repeat after a server reset),
    so even a plain build id costs one request. ``ns/env`` stays at one request: our server's
    environment answer embeds its ``current_build`` (id, environment id, ``scheduled_on``);
    only a server without that field costs a second one. Basic auth needs a cookie login
    first, which is left to the full client.
    """
    if config.auth == "basic":
        return None
    if not uri.is_environment:
        assert uri.build_id is not None
        return uri.build_id, build_identity(_build(config, uri.build_id))
    assert uri.namespace and uri.environment
    env = _environment(config, uri.namespace, uri.environment)
    if uri.build_id is None:
        if env.get("current_build_id") is None:
            return None  # no build to run: the full client explains why (failed? still building?)
        build_id = _current_build_id(env, uri.namespace, uri.environment)
        current = env.get("current_build")
        build = current if isinstance(current, dict) and current.get("id") == build_id else _build(config, build_id)
        if build.get("status") != "COMPLETED":
            return None  # a new environment's first build, not done yet: the full client says so
    else:
        build_id = uri.build_id
        build = _build(config, build_id)
    if build.get("environment_id") != env.get("id"):
        raise CLIError(f"build {build_id} does not belong to environment {uri.namespace}/{uri.environment}")
    return build_id, build_identity(build, uri.environment)

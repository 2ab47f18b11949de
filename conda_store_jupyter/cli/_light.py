"""One small JSON GET with ``http.client``, for the cached ``run`` path.

``conda-store run alice/ml`` must ask the server which build is current even when that build is
already unpacked locally. Importing httpx costs ~100 ms, more than the whole budget of a cached
run, so this single request uses the standard library. Error wording is shared with the full
client (:mod:`._errors`) so users see the same messages either way.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

from ._config import Config
from ._errors import CLIError, connection_error, http_error
from ._uri import BuildURI

TIMEOUT = 30.0


def get_json(config: Config, path: str) -> Any:
    """GET ``<url><path>`` and return the decoded JSON, or raise CLIError."""
    import http.client

    url = config.url + path
    parts = urlsplit(url)
    if parts.scheme == "https":
        import ssl

        context = ssl.create_default_context()
        if not config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(parts.netloc, timeout=TIMEOUT, context=context)
    else:
        conn = http.client.HTTPConnection(parts.netloc, timeout=TIMEOUT)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"Accept": "application/json", "User-Agent": "conda-store-jupyter-cli", **config.auth_headers()}
    try:
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    except OSError as exc:  # refused, reset, DNS, TLS, timeout (socket.timeout is an OSError)
        raise connection_error(config.url, exc) from None
    finally:
        conn.close()
    if resp.status >= 300:
        # A redirect here means a login page (e.g. a hub service without API auth): an error.
        raise http_error(resp.status, "GET", url, body)
    try:
        return json.loads(body)
    except ValueError:
        raise CLIError(f"the server at {config.url} did not answer with JSON (GET {url}); is it conda-store?") from None


def environment_path(namespace: str, name: str) -> str:
    return f"/api/v1/environment/{quote(namespace, safe='')}/{quote(name, safe='')}/"


def current_build_id(config: Config, namespace: str, name: str) -> int:
    """The current build id of ``namespace/name`` (one light request)."""
    doc = get_json(config, environment_path(namespace, name))
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise CLIError(f"unexpected answer for environment {namespace}/{name} from {config.url}")
    build_id = data.get("current_build_id")
    if build_id is None:
        raise CLIError(f"environment {namespace}/{name} has no completed build yet (try 'conda-store wait {namespace}/{name}')")
    return int(build_id)


def resolve_light(config: Config, uri: BuildURI) -> int | None:
    """The build id of ``uri`` using at most two light requests; None if the full client must.

    Basic auth needs a cookie login first, which is left to the full client.
    """
    if not uri.is_environment:
        return uri.build_id
    if config.auth == "basic":
        return None
    assert uri.namespace and uri.environment
    if uri.build_id is None:
        return current_build_id(config, uri.namespace, uri.environment)
    env = get_json(config, environment_path(uri.namespace, uri.environment))["data"]
    build = get_json(config, f"/api/v1/build/{uri.build_id}/")["data"]
    if build.get("environment_id") != env.get("id"):
        raise CLIError(f"build {uri.build_id} does not belong to environment {uri.namespace}/{uri.environment}")
    return uri.build_id

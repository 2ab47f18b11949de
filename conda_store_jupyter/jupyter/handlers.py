"""The extension's two routes: ``conda-store/api/v1/…`` (forwarded) and ``conda-store/config``.

Forwarding is a small, strict reverse proxy:

- Only ``api/v1/…`` paths, never with ``.``/``..`` segments: the credential added here is the
  user's hub token, and must not be aimed at anything but the service's API.
- Request headers are an allow-list (content type, accept, ``Last-Event-ID``); the browser's
  cookies and ``Authorization`` (its credential for *this* server) never leave. Response headers
  are an allow-list too, which also keeps every hop-by-hop header (``Connection``,
  ``Transfer-Encoding``, ``Keep-Alive``…) out in both directions.
- Bodies are streamed chunk by chunk and flushed at once: server-sent log events reach the
  browser as the service writes them, and an archive download never sits in memory.
- The service's errors pass through as they are (status and ``{status, message}`` envelope);
  failures to reach it are answered in the same envelope, with the URL and the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Protocol
from urllib.parse import unquote

import httpx
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from .config import ServiceTarget, registry_host


class _Extension(Protocol):
    """What the handlers need of ``CondaStoreExtension`` (named here so handlers don't import app)."""

    target: ServiceTarget
    client: httpx.AsyncClient
    connect_timeout: float
    request_timeout: float

    @property
    def service_public_url(self) -> str | None: ...

REQUEST_HEADERS = ("Content-Type", "Accept", "Last-Event-ID")
RESPONSE_HEADERS = ("Content-Type", "Content-Disposition", "Cache-Control", "Content-Length", "Location",
                    "Retry-After", "X-Accel-Buffering")
_NO_BODY = {204, 304}


def envelope_error(message: str) -> str:
    """The service's error envelope, for answers the extension gives itself."""
    return json.dumps({"status": "error", "data": None, "message": message})


def _reason(exc: BaseException) -> str:
    """The root cause in a few words: ``connection refused``, ``name or service not known``…

    httpx (anyio) wraps the socket error ("All connection attempts failed"); the OSError under it
    is what a reader can act on.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:1].lower() + text[1:]


class _Handler(ExtensionHandlerMixin, APIHandler):
    @property
    def extension(self) -> _Extension:
        return self.extensionapp  # type: ignore[return-value]

    def fail(self, status: int, message: str) -> None:
        self.log.warning("conda-store: %d %s", status, message)
        self.set_status(status)
        self.finish(envelope_error(message))

    def connection_problem(self, exc: httpx.HTTPError) -> tuple[int, str]:
        """Status and message for a request that got no answer from the service."""
        where = f"conda-store service at {self.extension.target.url}"
        if isinstance(exc, httpx.ConnectTimeout):
            return 504, f"{where} did not accept a connection within {self.extension.connect_timeout:g} s"
        if isinstance(exc, httpx.TimeoutException):
            return 504, f"{where} did not answer within {self.extension.request_timeout:g} s"
        if isinstance(exc, httpx.ConnectError):
            return 503, f"{where} is not reachable: {_reason(exc)}"
        return 502, f"{where} sent no valid answer: {_reason(exc)}"


class ForwardHandler(_Handler):
    """``<base_url>conda-store/api/v1/<path>`` → ``<service>/api/v1/<path>``, streamed both ways."""

    @web.authenticated
    async def get(self, path: str) -> None:
        await self.forward(path)

    @web.authenticated
    async def post(self, path: str) -> None:
        await self.forward(path)

    @web.authenticated
    async def put(self, path: str) -> None:
        await self.forward(path)

    @web.authenticated
    async def patch(self, path: str) -> None:
        await self.forward(path)

    @web.authenticated
    async def delete(self, path: str) -> None:
        await self.forward(path)

    @property
    def own_prefix(self) -> str:
        return url_path_join(self.base_url, "conda-store/")

    async def forward(self, _decoded: str) -> None:
        target = self.extension.target
        if target.url is None:
            self.fail(503, target.problem or "no conda-store service is configured")
            return
        # The raw (still percent-encoded) path: what the browser asked for, byte for byte. The
        # route's own argument is already decoded (an encoded "/" or "?" would change meaning).
        if not self.request.path.startswith(self.own_prefix):
            raise web.HTTPError(404)
        raw = self.request.path[len(self.own_prefix):]
        if any(segment in (".", "..") for segment in unquote(raw).split("/")):
            self.fail(400, f"path {raw!r} has '.' or '..' segments")
            return
        # `_xsrf` is this server's own anti-forgery argument (Lab's EventSource sends it, having no
        # headers); it means nothing to the service, so it is not passed on.
        query = "&".join(part for part in self.request.query.split("&")
                         if part and part.split("=", 1)[0] != "_xsrf")
        url = f"{target.url}/{raw}" + (f"?{query}" if query else "")
        headers = {name: self.request.headers[name] for name in REQUEST_HEADERS if name in self.request.headers}
        headers.update(target.headers)
        headers["Accept-Encoding"] = "identity"  # bytes pass through untouched, lengths stay true
        body = self.request.body if self.request.method != "GET" else None
        request = self.extension.client.build_request(self.request.method, url, headers=headers, content=body)
        try:
            response = await self.extension.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            self.fail(*self.connection_problem(exc))
            return
        try:
            await self._relay(response)
        finally:
            await response.aclose()

    async def _relay(self, response: httpx.Response) -> None:
        self.set_status(response.status_code)
        for name in RESPONSE_HEADERS:
            value = response.headers.get(name)
            if value is None or (name == "Content-Length" and response.status_code in _NO_BODY):
                continue
            # Location as it is: the service redirects only to storage (a presigned S3 URL),
            # which the browser follows without any credential of ours.
            self.set_header(name, value)
        content_type = response.headers.get("Content-Type", "application/octet-stream")
        try:
            async for chunk in response.aiter_raw():
                self.write(chunk)
                await self.flush()
        except StreamClosedError:
            return  # the browser went away; closing the response stops the service's side too
        except httpx.HTTPError as exc:
            # Headers are out: the only honest signal left is a cut connection (a chunked answer
            # finished here would look complete, e.g. a truncated archive download).
            self.log.warning("conda-store: answer from %s broke off: %s", response.url, _reason(exc))
            self.request.connection.close()
        self.finish(set_content_type=content_type)


class ConfigHandler(_Handler):
    """What the panel needs before its first call: is a service configured and reachable, where
    users see it (``docker pull`` and download lines), and who the user is there."""

    @web.authenticated
    async def get(self) -> None:
        ext = self.extension
        target = ext.target
        data: dict[str, Any] = {
            "configured": target.configured,
            "reachable": False,
            "message": target.problem,
            "url_source": target.url_source,
            "auth": target.auth,
            "api_url": url_path_join(self.base_url, "conda-store/api/v1/"),
            "public_url": ext.service_public_url,
            "registry": registry_host(ext.service_public_url) if ext.service_public_url else None,
            "user": None,
        }
        if target.url is not None:
            headers = dict(target.headers)
            try:
                answer, version = await asyncio.gather(
                    ext.client.get(f"{target.url}/api/v1/permission/", headers=headers),
                    ext.client.get(f"{target.url}/api/v1/", headers=headers))
            except httpx.HTTPError as exc:
                data["message"] = self.connection_problem(exc)[1]
            else:
                data.update(self._identity(answer))
                data["registry"] = self._announced_registry(version) or data["registry"]
        self.finish(json.dumps({"status": "ok", "data": data, "message": None}))

    @staticmethod
    def _announced_registry(answer: httpx.Response) -> str | None:
        """The service's ``c.CondaStoreServer.registry_url`` host, when it sets one: under
        JupyterHub the host users reach the service at (the hub's proxy) serves no ``/v2/``."""
        try:
            doc = answer.json()
        except ValueError:
            return None
        data = doc.get("data") if isinstance(doc, dict) else None
        host = data.get("registry_host") if isinstance(data, dict) else None
        return host if isinstance(host, str) and host else None

    @staticmethod
    def _identity(answer: httpx.Response) -> dict[str, Any]:
        try:
            doc = answer.json()
        except ValueError:
            doc = None
        if answer.status_code == 200 and isinstance(doc, dict) and isinstance(doc.get("data"), dict):
            return {"reachable": True, "user": doc["data"]}
        message = doc.get("message") if isinstance(doc, dict) else None
        # An enveloped error (e.g. 401: the configured token is unknown, expired or revoked) comes
        # from the service itself: it is reachable, and the message says what to fix.
        enveloped = isinstance(doc, dict) and doc.get("status") == "error"
        return {"reachable": enveloped,
                "message": f"conda-store service answered {answer.status_code}: "
                           f"{message or answer.text[:200] or answer.reason_phrase}"}


__all__ = ["ConfigHandler", "ForwardHandler"]

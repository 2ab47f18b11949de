"""The service's ``GET /api/v1/kernels/`` from the Jupyter side: the list (with ``If-None-Match``,
so polling an unchanged list costs the service one query and sends no body) and one environment
at launch time (current build, or a pinned one)."""

from __future__ import annotations

from typing import Any

import httpx

from ..config import ServiceTarget
from .records import EnvironmentEntry


class ServiceUnavailable(Exception):
    """The service could not answer; the message names it and says why, for a person."""


class KernelService:
    def __init__(self, target: ServiceTarget, client: httpx.AsyncClient) -> None:
        self.target = target
        self.client = client

    @property
    def url(self) -> str:
        return self.target.url or ""

    async def _get(self, params: dict[str, Any], etag: str | None = None) -> httpx.Response:
        if not self.target.configured:
            raise ServiceUnavailable(self.target.problem or "no conda-store service is configured")
        headers = {"Accept": "application/json", **self.target.headers}
        if etag:
            headers["If-None-Match"] = etag
        try:
            resp = await self.client.get(f"{self.url}/api/v1/kernels/", params=params, headers=headers)
        except httpx.HTTPError as exc:
            from ..handlers import _reason

            raise ServiceUnavailable(f"the conda-store service at {self.url} cannot be reached ({_reason(exc)})") from None
        if resp.status_code == 304:
            return resp
        if resp.status_code in (401, 403):
            raise ServiceUnavailable(f"the conda-store service at {self.url} refused this server's credential "
                                     f"(HTTP {resp.status_code}): {_message(resp)}")
        if resp.status_code >= 400:
            raise ServiceUnavailable(f"the conda-store service at {self.url} answered HTTP {resp.status_code}: "
                                     f"{_message(resp)}")
        return resp

    async def list(self, etag: str | None = None) -> tuple[list[EnvironmentEntry] | None, str | None]:
        """Every readable environment; ``(None, etag)`` when unchanged since ``etag``."""
        resp = await self._get({}, etag)
        if resp.status_code == 304:
            return None, etag
        return self._parse(resp), resp.headers.get("etag")

    async def one(self, namespace: str, environment: str, build_id: int | None = None) -> EnvironmentEntry | None:
        params: dict[str, Any] = {"namespace": namespace, "environment": environment}
        if build_id is not None:
            params["build_id"] = build_id
        entries = self._parse(await self._get(params))
        return entries[0] if entries else None

    def _parse(self, resp: httpx.Response) -> list[EnvironmentEntry]:
        try:
            return [EnvironmentEntry.parse(item) for item in resp.json()["data"]]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            # e.g. an older service without /api/v1/kernels/ behind a proxy answering 200 with a page
            raise ServiceUnavailable(f"the conda-store service at {self.url} answered GET /api/v1/kernels/ with "
                                     f"something that is not a kernel list ({type(exc).__name__}: {exc}); "
                                     "is it a version with kernel support?") from None


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("message") or "")
    except ValueError:
        return resp.text[:200]


__all__ = ["KernelService", "ServiceUnavailable"]

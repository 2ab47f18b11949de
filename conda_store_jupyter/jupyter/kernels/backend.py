"""The extension's kernel state: its view of the service's list, the spec directory, the poller,
and what each running kernel runs.

The provisioner is created by jupyter_client (from the entry point), not by the extension, so it
finds this object through :func:`current` (set when the extension loads). Outside a server with
the extension (nbclient, papermill in the same environment) there is none and the provisioner
makes one of its own from the environment (:func:`standalone`), without poller or spec directory.

Refreshes are single-flight: concurrent callers (the poller, the panel's ``GET kernels`` and a
forced ``POST kernels/refresh``) share one request to the service.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..config import ServiceTarget, resolve_target
from .cache import Source
from .records import EnvironmentEntry, RunningKernel
from .resolve import LaunchOptions
from .service import KernelService, ServiceUnavailable
from .specs import KernelSpecDirectory, has_kernel, kernel_name

log = logging.getLogger("conda_store_jupyter.kernels")

_CURRENT: "KernelBackend | None" = None


def current() -> "KernelBackend | None":
    return _CURRENT


def install(backend: "KernelBackend | None") -> None:
    global _CURRENT
    _CURRENT = backend


def standalone() -> "KernelBackend":
    """A backend for a provisioner running without the extension (same rules for the service)."""
    global _CURRENT
    if _CURRENT is None:
        target = resolve_target()
        client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), verify=target.verify_ssl)
        _CURRENT = KernelBackend(target, client, LaunchOptions(), spec_dir=None, root_dir=None)
    return _CURRENT


@dataclass
class View:
    """The last list the service gave, when, and a version that changes when it does."""

    entries: list[EnvironmentEntry] = field(default_factory=list)
    fetched: float = 0.0  # time.monotonic(); 0 = never
    version: str = ""
    etag: str | None = None
    error: str | None = None


class KernelBackend:
    def __init__(self, target: ServiceTarget, client: httpx.AsyncClient, options: LaunchOptions, *,
                 spec_dir: Path | None, root_dir: str | None) -> None:
        self.target = target
        self.service = KernelService(target, client)
        self.source = Source(target.url, dict(target.headers), target.verify_ssl) if target.configured else None
        self.options = options
        self.specs = KernelSpecDirectory(spec_dir) if spec_dir is not None else None
        self.root_dir = root_dir
        self.view = View()
        self.running: dict[str, RunningKernel] = {}
        self._inflight: asyncio.Future[View] | None = None
        self._poller: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the list

    async def refresh(self, max_age: float = 0.0) -> View:
        """The view, fetched again unless it is at most ``max_age`` seconds old."""
        if self.view.fetched and time.monotonic() - self.view.fetched <= max_age and self.view.error is None:
            return self.view
        if self._inflight is not None:
            return await asyncio.shield(self._inflight)
        self._inflight = asyncio.get_running_loop().create_future()
        try:
            view = await self._fetch()
            self._inflight.set_result(view)
            return view
        except BaseException as exc:
            self._inflight.set_exception(exc)
            self._inflight.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            self._inflight = None

    async def _fetch(self) -> View:
        old = self.view
        try:
            entries, etag = await self.service.list(old.etag if old.error is None else None)
        except ServiceUnavailable as exc:
            # Keep the last specs: launching one then starts the fallback kernel, which says this.
            self.view = View(old.entries, time.monotonic(), old.version, None, str(exc))
            return self.view
        if entries is None:  # 304: unchanged
            self.view = View(old.entries, time.monotonic(), old.version, old.etag, None)
            return self.view
        version = hashlib.sha256(json.dumps([_summary(e) for e in entries], sort_keys=True).encode()).hexdigest()[:16]
        self.view = View(entries, time.monotonic(), version, etag, None)
        if self.specs is not None and version != old.version:
            changed = await asyncio.to_thread(self.specs.sync, entries)
            if changed:
                log.info("conda-store: kernelspecs updated (%d kernels)", len(self.specs.names()))
        return self.view

    def entry(self, namespace: str, environment: str) -> EnvironmentEntry | None:
        return next((e for e in self.view.entries if (e.namespace, e.environment) == (namespace, environment)), None)

    # ------------------------------------------------------------------ the poller

    def start_polling(self, interval: float) -> None:
        if interval > 0 and self.target.configured and self._poller is None:
            self._poller = asyncio.get_event_loop().create_task(self._poll(interval))

    async def _poll(self, interval: float) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the poller must survive anything one round meets
                log.exception("conda-store: refreshing the kernel list failed")
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._poller = None

    # ------------------------------------------------------------------ panel answers

    def listing(self) -> dict[str, Any]:
        """The ``GET conda-store/kernels`` body (see KERNEL-CONTRACT)."""
        return {"version": self.view.version, "error": self.view.error,
                "kernels": [_listed(e) for e in self.view.entries]}


def _summary(e: EnvironmentEntry) -> list[Any]:
    b = e.build
    return [e.namespace, e.environment, e.current_build_id,
            None if b is None else [b.id, b.status, b.deleted, b.kernel.name if b.kernel else None, b.lockfile_sha256]]


def _listed(e: EnvironmentEntry) -> dict[str, Any]:
    b = e.build
    if b is None:
        status, message = "no-build", "no completed build yet"
    elif not b.usable:
        status, message = "unavailable", f"build {b.id} is {'deleted' if b.deleted else b.status}"
    elif b.kernel is None:
        status, message = "no-kernel-package", "no kernel package in this environment: add ipykernel and rebuild"
    else:
        status, message = "ready", f"build {b.id} ({b.kernel.name} {b.kernel.version})"
    return {
        "namespace": e.namespace, "environment": e.environment,
        "kernel_name": kernel_name(e.namespace, e.environment) if has_kernel(e) else None,
        "display_name": e.display_name, "build_id": b.id if b is not None else None,
        "language": b.kernel.language if b is not None and b.kernel is not None else None,
        "status": status, "message": message,
    }


__all__ = ["KernelBackend", "View", "current", "install", "standalone"]

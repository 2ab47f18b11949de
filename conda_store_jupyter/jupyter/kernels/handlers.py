"""``conda-store/kernels``, ``conda-store/kernels/refresh`` and ``conda-store/kernels/running/<id>``
(the contract with the Lab panel: /work/wt/KERNEL-CONTRACT.md, summarised in each handler)."""

from __future__ import annotations

import json

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from . import backend as backends
from .backend import KernelBackend
from .service import ServiceUnavailable

LIST_MAX_AGE = 1.0
"""Seconds a listing may be old before ``GET kernels`` asks the service again (single flight)."""


class _KernelHandler(ExtensionHandlerMixin, APIHandler):
    @property
    def backend(self) -> KernelBackend:
        backend = backends.current()
        if backend is None:
            raise web.HTTPError(404, "kernels from conda-store environments are disabled "
                                     "(c.CondaStoreExtension.enable_kernels)")
        return backend

    def reply(self, body: dict, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    async def listing(self, max_age: float) -> None:
        backend = self.backend
        view = await backend.refresh(max_age=max_age)
        if view.error is not None and not view.version:  # never had a list: nothing to show
            self.reply({"status": "error", "message": view.error, "data": None}, 503)
            return
        self.reply(backend.listing())


class KernelsHandler(_KernelHandler):
    """``{"version", "error", "kernels": [{namespace, environment, kernel_name, display_name,
    build_id, language, status, message}]}``; fresh to within a second."""

    @web.authenticated
    async def get(self) -> None:
        await self.listing(LIST_MAX_AGE)


class KernelsRefreshHandler(_KernelHandler):
    """The same body, asked of the service now (the panel calls it when a build completes)."""

    @web.authenticated
    async def post(self) -> None:
        await self.listing(0.0)


class RunningKernelHandler(_KernelHandler):
    """What a kernel started from an environment runs, and the environment's current build now."""

    @web.authenticated
    async def get(self, kernel_id: str) -> None:
        backend = self.backend
        running = backend.running.get(kernel_id)
        if running is None:
            self.reply({"status": "error", "data": None,
                        "message": f"kernel {kernel_id} was not started from a conda-store environment "
                                   "(or is not running)"}, 404)
            return
        # NOW, not as of the last poll: the panel offers "restart to use build N" from this.
        try:
            entry = await backend.service.one(running.namespace, running.environment)
        except ServiceUnavailable:
            entry = backend.entry(running.namespace, running.environment)
        self.reply(running.to_json(entry.current_build_id if entry is not None else None))


def handlers(prefix: str) -> list[tuple[str, type]]:
    return [
        (rf"/{prefix}/kernels/?", KernelsHandler),
        (rf"/{prefix}/kernels/refresh/?", KernelsRefreshHandler),
        (rf"/{prefix}/kernels/running/([^/]+)/?", RunningKernelHandler),
    ]

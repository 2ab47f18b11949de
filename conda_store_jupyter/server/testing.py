"""Run a real ``conda-store-server`` in-process on a free port (tests, benchmarks, notebooks).

The server gets its own thread and event loop, so synchronous clients (httpx, the upstream
``conda-store`` client in a subprocess, Playwright) talk to it over real HTTP exactly as they would
to a deployed one. No part of the request path is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Iterator

from traitlets.config import Config

from .app import CondaStoreServer


@dataclass
class RunningServer:
    app: CondaStoreServer
    url: str  # base URL including url_prefix, with a trailing slash

    @property
    def store(self):
        return self.app.store

    @property
    def auth(self):
        return self.app.auth

    def api(self, path: str) -> str:
        return f"{self.url}api/v1/{path.lstrip('/')}"


@contextlib.contextmanager
def running_server(config: Config, argv: list[str] | None = None) -> Iterator[RunningServer]:
    """Start ``CondaStoreServer`` with ``config`` on 127.0.0.1:<free port>; stop it on exit."""
    config.CondaStoreServer.setdefault("port", 0)
    app = CondaStoreServer(config=config)
    app.initialize(argv or [])
    app.store.engine  # noqa: B018 - migrate before serving
    ready = threading.Event()
    state: dict = {}

    def run() -> None:
        async def serve() -> None:
            server = app.listen()
            state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            await state["stop"].wait()
            server.stop()
            await server.close_all_connections()

        try:
            asyncio.run(serve())
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="conda-store-server", daemon=True)
    thread.start()
    if not ready.wait(30) or "loop" not in state:
        raise RuntimeError("conda-store-server did not start")
    try:
        yield RunningServer(app=app, url=app.public_url)
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(10)
        app.store.dispose()


def user_token(server: RunningServer, username: str, *, admin: bool = False, **kwargs) -> str:
    """Issue a session-like token for ``username`` (primary namespace = their name)."""
    identity = server.auth.identity_for_user(username, admin=admin)
    kwargs.setdefault("primary_namespace", None)
    kwargs.setdefault("role_bindings", None)
    kwargs.setdefault("expiration", None)
    return server.auth.issue_token_for(identity, **kwargs).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}

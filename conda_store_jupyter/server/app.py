"""``conda-store-server``: the tornado web service (REST API v1, login, metrics, registry).

    conda-store-server --config conda_store_config.py     # production: Redis, PostgreSQL, S3, workers
    conda-store-server --standalone [--demo]              # one machine, nothing to install or configure

The same config file configures ``c.CondaStoreServer``, ``c.CondaStore``,
``c.AuthenticationBackend`` and ``c.Registry``. ``--standalone`` fills in whatever the file
leaves open: SQLite and local storage under ``./conda-store-state``, a private redis-server and
two ``conda-store-worker`` processes (``EmbeddedServices``), and — when the default channel
cannot be reached — a real local channel built on the spot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from traitlets import Bool, Integer, TraitError, Unicode, default, validate
from traitlets.config import Application

from ..app import CondaStore
from ..auth.backend import AuthenticationBackend
from ..auth.hub import HubAuthentication, running_as_hub_service
from . import (
    builds,
    environments,
    hub_login,
    kernels,
    login,
    logs,
    metrics,
    namespaces,
    packages,
    pages,
    permissions,
    specifications,
    tokens,
    validation,
)
from . import standalone as _standalone
from .base import NotFoundHandler, routes
from .httpserver import HEADER_READ_LIMIT, PlainHTTPServer
from .registry import Registry, registry_handlers

HANDLER_MODULES = (permissions, namespaces, environments, validation, specifications, logs, builds, tokens,
                   packages, metrics, kernels, pages, login, hub_login)  # pages before login: GET /login/ is the page



def registry_host_of(url: str) -> str:
    """``host[:port]`` of ``registry_url`` (``host[:port]`` or ``http(s)://host[:port][/]``)."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    problem = None
    if "://" in url and parts.scheme not in ("http", "https"):
        problem = f"the scheme must be http or https, not {parts.scheme!r}"
    elif not parts.hostname:
        problem = "it names no host"
    elif parts.username is not None or parts.password is not None:
        problem = "it must not carry credentials (users log in with docker login)"
    elif parts.path.strip("/") or parts.query or parts.fragment:
        problem = "it must not have a path: registries are served at the host's root (/v2/)"
    else:
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            problem = str(exc)
    if problem:
        raise TraitError(f"CondaStoreServer.registry_url {url!r} is invalid: {problem}")
    return parts.netloc


class CondaStoreServer(Application):
    """The web service. Handlers live one module per resource in this package."""

    name = "conda-store-server"
    description = "Serve the conda-store REST API (upstream v1 compatible), login, metrics and registry."

    config_file = Unicode(
        "",
        help="""Traitlets config file (``conda_store_config.py``) shared with ``conda-store-worker``.
        Configures this server (``c.CondaStoreServer``), the store (``c.CondaStore``), auth
        (``c.AuthenticationBackend``) and the registry (``c.Registry``).""",
    ).tag(config=True)

    address = Unicode("127.0.0.1", help="Address to listen on (``0.0.0.0`` for all interfaces).").tag(config=True)

    port = Integer(8080, help="""Port to listen on; 0 picks a free one (printed at start). As a
        JupyterHub service: the port of ``$JUPYTERHUB_SERVICE_URL`` by default.""").tag(config=True)

    url_prefix = Unicode(
        "/",
        help="""Path prefix of every route except the registry (``/v2/`` is always at the root,
        because registry clients build it from the host name). ``/conda-store`` behind a proxy.
        As a JupyterHub service: ``$JUPYTERHUB_SERVICE_PREFIX`` (``/services/<name>/``) by default.""",
    ).tag(config=True)

    @default("port")
    def _default_port(self) -> int:
        # A hub-managed service listens where c.JupyterHub.services[...]["url"] says.
        url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "") if running_as_hub_service() else "")
        return url.port or {"http": 80, "https": 443}.get(url.scheme, 8080)

    @default("url_prefix")
    def _default_url_prefix(self) -> str:
        # ... and serves under /services/<name>/, the path the proxy forwards unchanged.
        return (os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/") if running_as_hub_service() else "/"

    @validate("url_prefix")
    def _normalize_prefix(self, proposal) -> str:
        return "/" + proposal.value.strip("/") + "/" if proposal.value.strip("/") else "/"

    max_page_size = Integer(
        100,
        help="""Largest page a listing returns (``?size=`` is capped to it). Listings asked for no
        page at all return every row, as the upstream ``conda-store`` client expects.""",
    ).tag(config=True)

    max_body_size = Integer(
        1024 * 1024,
        help="""Largest request body in bytes; larger ones get 413. Environment files are a few
        KB (``schema.SPECIFICATION_MAX_BYTES`` is 256 KB).""",
    ).tag(config=True)

    max_buffer_size = Integer(
        64 * 1024 * 1024,
        help="""Bodies larger than this are cut off at the connection level (tornado closes the
        socket). Bodies between ``max_body_size`` and this are read and answered with an
        enveloped 413, which clients can show.""",
    ).tag(config=True)

    max_header_size = Integer(
        64 * 1024,
        help="""Largest request line + headers in bytes; larger requests get 431 (Request Header
        Fields Too Large). Real ones are a few KB; a browser with many cookies, some tens.""",
    ).tag(config=True)

    standalone = Bool(
        False,
        help="""Run everything on this machine: a private redis-server and worker processes, SQLite
        and local storage unless configured otherwise, and a local channel if the default channel
        cannot be reached. The admin token is kept in ``<store>/admin-token`` (mode 0600) and stays
        the same across restarts; its plaintext is printed when it is minted.""",
    ).tag(config=True)

    demo = Bool(
        False,
        help="""With --standalone: also create ``demo/python-demo`` and print how to use it. Built
        only when no build of its specification exists yet, not on every start.""",
    ).tag(config=True)

    new_admin_token = Bool(
        False,
        help="""With --standalone: revoke the admin token in ``<store>/admin-token`` and mint a
        new one (printed once, and written to that file).""",
    ).tag(config=True)

    workers = Integer(2, help="Worker processes started by --standalone.").tag(config=True)

    enable_registry = Bool(True, help="Serve the Docker registry API at ``/v2/``.").tag(config=True)

    registry_url = Unicode(
        "",
        help="""Where docker clients reach this server's registry, as ``host[:port]`` or an
        ``http(s)://`` URL without a path (registries always live at the host's root, ``/v2/``).
        Shown in the page's ``docker pull`` / ``docker login`` lines and announced in
        ``GET /api/v1/`` (``registry_host``), where the JupyterLab extension picks it up. Empty:
        the host the page was requested on, right when users reach this server directly. Set it
        under JupyterHub: there the page is reached through the hub's proxy, which forwards
        ``/services/<name>/`` but not ``/v2/``, so the hub's host cannot be pulled from; give the
        address at which this server (or a proxy route to its ``/v2/``) is reachable.""",
    ).tag(config=True)

    @validate("registry_url")
    def _check_registry_url(self, proposal) -> str:
        value = proposal.value.strip()
        if value:
            registry_host_of(value)  # raises TraitError with the exact problem
        return value

    @property
    def registry_host(self) -> str | None:
        """``host[:port]`` from ``registry_url``, or None when it is not set."""
        return registry_host_of(self.registry_url) if self.registry_url else None

    cookie_secret_file = Unicode(
        help="""File holding the secret tornado signs cookies with (the xsrf cookie). Created with
        a random secret if missing. Defaults to ``<store_directory>/cookie_secret``.""",
    ).tag(config=True)

    aliases = {
        "config": "CondaStoreServer.config_file",
        "address": "CondaStoreServer.address",
        "port": "CondaStoreServer.port",
        "url-prefix": "CondaStoreServer.url_prefix",
        "workers": "CondaStoreServer.workers",
        "log-level": "Application.log_level",
    }
    flags = {
        "standalone": ({"CondaStoreServer": {"standalone": True}}, standalone.help),
        "demo": ({"CondaStoreServer": {"standalone": True, "demo": True}}, demo.help),
        "new-admin-token": ({"CondaStoreServer": {"standalone": True, "new_admin_token": True}}, new_admin_token.help),
        "debug": ({"Application": {"log_level": 10}}, "Log at DEBUG level."),
    }
    classes = [CondaStore, AuthenticationBackend, HubAuthentication, Registry]

    @default("log_level")
    def _default_log_level(self) -> int:
        return 20

    @default("log_format")
    def _default_log_format(self) -> str:
        # JupyterHub's shape: level, time to the millisecond, logger; what an operator greps for.
        return "[%(levelname)1.1s %(asctime)s.%(msecs)03d %(name)s] %(message)s"

    @default("log_datefmt")
    def _default_log_datefmt(self) -> str:
        return "%Y-%m-%d %H:%M:%S"

    def get_default_logging_config(self) -> dict:
        """Our console handler also for tornado's loggers (its own errors, e.g. a traceback
        before a 500) and this package's module loggers: one format, with timestamps, for every
        line the server writes. They still propagate, so embedding code and tests see them too."""
        config = super().get_default_logging_config()
        if "loggers" in config:  # absent under pythonw
            for name in ("tornado", "conda_store_jupyter"):
                config["loggers"][name] = {"level": logging.getLevelName(self.log_level),
                                           "handlers": ["console"], "propagate": True}
        return config

    # -- set-up ------------------------------------------------------------------------------------
    store: CondaStore
    auth: AuthenticationBackend
    registry: Registry
    bound_port: int | None = None
    admin_token: _standalone.AdminToken | None = None

    @property
    def base_url(self) -> str:
        return self.url_prefix

    def initialize(self, argv: list[str] | None = None) -> None:
        self.parse_command_line(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
            self.parse_command_line(argv)  # the command line wins over the file
        self.store = CondaStore(config=self.config, log=self.log)
        if self.config_file:
            self.store.config_file = os.path.abspath(self.config_file)  # read by worker jobs
        self.auth = AuthenticationBackend(store=self.store, config=self.config)
        self.registry = Registry(config=self.config, log=self.log)

    def cookie_secret(self) -> bytes:
        path = Path(self.cookie_secret_file or self.store.store_path / "cookie_secret")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip().encode()

    def make_app(self) -> web.Application:
        table = [route for module in HANDLER_MODULES for route in module.HANDLERS]
        handlers: list[Any] = list(routes(self.url_prefix, table)) + pages.bundle_handlers(self.url_prefix)
        if self.enable_registry:
            handlers = registry_handlers(self.store, self.auth, self.registry) + handlers
        return web.Application(
            handlers,
            default_handler_class=NotFoundHandler,
            conda_store=self.store,
            authentication=self.auth,
            conda_store_server=self,
            cookie_secret=self.cookie_secret(),
            xsrf_cookie_kwargs={"path": self.url_prefix, "samesite": "Strict"},
            log_function=self._log_request,
        )

    def _log_request(self, handler: web.RequestHandler) -> None:
        status = handler.get_status()
        level = self.log.info if status < 400 else self.log.warning if status < 500 else self.log.error
        level("%d %s %s %.1fms", status, handler.request.method, handler.request.uri,
              1000.0 * handler.request.request_time())

    def listen(self) -> HTTPServer:
        """Bind (port 0 → a free port, remembered in ``bound_port``) and start serving."""
        server = PlainHTTPServer(self.make_app(), max_body_size=self.max_buffer_size, xheaders=True,
                                 max_header_size=max(HEADER_READ_LIMIT, 2 * self.max_header_size))
        server.max_header_size = self.max_header_size
        sockets = bind_sockets(self.port, self.address)
        server.add_sockets(sockets)
        self.bound_port = sockets[0].getsockname()[1]
        return server

    @property
    def public_url(self) -> str:
        return f"http://{self.address}:{self.bound_port or self.port}{self.url_prefix}"

    # -- running -----------------------------------------------------------------------------------
    def start(self) -> None:
        with ExitStack() as stack:
            if self.standalone:
                _standalone.prepare_standalone(self.store, config_file=self.config_file, workers=self.workers,
                                               stack=stack)
            self.store.engine  # noqa: B018 - apply migrations before the first request
            if self.standalone:
                self.admin_token = _standalone.admin_token(self.store, renew=self.new_admin_token)
            asyncio.run(self._serve())

    async def _serve(self) -> None:
        server = self.listen()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"conda-store-server listening on {self.public_url}", flush=True)
        demo = None
        if self.admin_token is not None:
            url = self.public_url.rstrip("/")
            _standalone.announce(self.admin_token, url)
            if self.demo:
                demo = loop.create_task(_standalone.follow_demo(self.store, self.admin_token, url))
        await stop.wait()
        if demo is not None:
            demo.cancel()
        self.log.info("shutting down")
        server.stop()
        await asyncio.wait_for(server.close_all_connections(), timeout=5)


def main(argv: list[str] | None = None) -> None:
    app = CondaStoreServer()
    try:
        app.initialize(argv)
    except TraitError as exc:  # a configured value our validators refused: one line, no traceback
        sys.exit(f"conda-store-server: {exc}")
    try:
        app.start()
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C during shutdown
        sys.exit(130)


if __name__ == "__main__":
    main()

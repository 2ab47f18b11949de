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

from .. import api
from ..app import CondaStore
from ..exceptions import ValidationError
from ..naming import validate_name
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
    settings,
    specifications,
    tokens,
    validation,
)
from . import filesystem_watch
from . import standalone as _standalone
from .base import NotFoundHandler, routes
from .httpserver import HEADER_READ_LIMIT, PlainHTTPServer, SharedLoad
from .processes import ForkUnsafe, ServerProcesses, default_processes
from .registry import Registry, registry_handlers

HANDLER_MODULES = (permissions, namespaces, environments, validation, specifications, logs, builds, tokens,
                   packages, settings, metrics, kernels, pages, login, hub_login)  # pages before login: GET /login/ is the page


PROCESSES_PROBLEM = "CondaStoreServer.processes must be at least 1, got {}"


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

    processes = Integer(
        help="""Server processes answering on the port (all accept on the same socket). Default:
        the number of cores this process may use. 1 serves from this process alone, as before.
        With more, a supervisor process forks them, replaces one that dies, and stops them all
        on SIGTERM/SIGINT; --standalone still starts one Redis and one set of workers.""",
    ).tag(config=True)

    @default("processes")
    def _default_processes(self) -> int:
        return default_processes()

    @validate("processes")
    def _check_processes(self, proposal) -> int:
        if proposal.value < 1:
            raise TraitError(PROCESSES_PROBLEM.format(proposal.value))
        return proposal.value

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
        "processes": "CondaStoreServer.processes",
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
    watch_task: asyncio.Task | None = None
    admin_token: _standalone.AdminToken | None = None

    @property
    def base_url(self) -> str:
        return self.url_prefix

    def initialize(self, argv: list[str] | None = None) -> None:
        self.parse_command_line(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
            self.parse_command_line(argv)  # the command line wins over the file
        # A value from the command line or file reaches the trait without its validator failing
        # the start (traitlets only logs it), so check here too: one line, non-zero exit.
        if self.processes < 1:
            raise TraitError(PROCESSES_PROBLEM.format(self.processes))
        self.store = CondaStore(config=self.config, log=self.log)
        try:  # created at start (prepare_database): a bad name fails now, in one line
            validate_name(self.store.default_namespace, "CondaStore.default_namespace")
        except ValidationError as exc:
            raise TraitError(str(exc)) from None
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

    def prepare_database(self) -> None:
        """Migrate, and make sure ``CondaStore.default_namespace`` exists (upstream has it from the
        first start: clients read ``namespace/default/`` before anything was built there)."""
        api.in_transaction(self.store, lambda db: api.create_namespace(db, self.store.default_namespace,
                                                                       exist_ok=True))

    def _http_server(self) -> PlainHTTPServer:
        server = PlainHTTPServer(self.make_app(), max_body_size=self.max_buffer_size, xheaders=True,
                                 max_header_size=max(HEADER_READ_LIMIT, 2 * self.max_header_size))
        server.max_header_size = self.max_header_size
        return server

    def listen(self) -> HTTPServer:
        """Bind (port 0 → a free port, remembered in ``bound_port``) and start serving."""
        self.prepare_database()
        server = self._http_server()
        sockets = bind_sockets(self.port, self.address)
        server.add_sockets(sockets)
        self.bound_port = sockets[0].getsockname()[1]
        # Environments from files (CondaStore.watch_paths): one server at a time, see filesystem_watch.
        self.watch_task = filesystem_watch.start_watching(self.store)
        return server

    @property
    def public_url(self) -> str:
        return f"http://{self.address}:{self.bound_port or self.port}{self.url_prefix}"

    # -- running -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.processes > 1:
            self._start_processes()
            return
        with ExitStack() as stack:
            if self.standalone:
                _standalone.prepare_standalone(self.store, config_file=self.config_file, workers=self.workers,
                                               stack=stack)
            self.store.engine  # noqa: B018 - apply migrations before the first request
            if self.standalone:
                self.admin_token = _standalone.admin_token(self.store, renew=self.new_admin_token)
            asyncio.run(self._serve())

    def _start_processes(self) -> None:
        """``processes > 1``: see :mod:`.processes` for the layout and why the fork comes first."""
        sockets = bind_sockets(self.port, self.address)
        self.bound_port = sockets[0].getsockname()[1]
        group = ServerProcesses(sockets, self.processes, self._serve_child)
        group.fork(self.store)  # before threads, the engine, Redis and the event loop exist here
        with ExitStack() as stack:
            stack.callback(group.stop)  # also when the preparation below fails
            if self.standalone:
                _standalone.prepare_standalone(self.store, config_file=self.config_file, workers=self.workers,
                                               stack=stack)
            stack.callback(group.stop)  # servers stop before the embedded services they use
            self.store.engine  # noqa: B018 - migrations run once, here; the servers skip them
            self.prepare_database()  # the default namespace, once, here
            self.cookie_secret()  # created once, here: every server signs with the same secret
            if self.standalone:
                self.admin_token = _standalone.admin_token(self.store, renew=self.new_admin_token)
            group.go(self.store)
            code = asyncio.run(self._serve(group))
        if code:
            sys.exit(code)

    async def _serve(self, group: ServerProcesses | None = None) -> int:
        """Serve here (``group`` None) or watch the server processes; return the exit code."""
        server = self.listen() if group is None else None
        if group is not None:
            # Environments from files: watched by this main process, not by each server process.
            self.watch_task = filesystem_watch.start_watching(self.store)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"conda-store-server listening on {self.public_url}"
              + (f" ({self.processes} processes)" if group is not None else ""), flush=True)
        demo = None
        if self.admin_token is not None:
            url = self.public_url.rstrip("/")
            _standalone.announce(self.admin_token, url)
            if self.demo:
                demo = loop.create_task(_standalone.follow_demo(self.store, self.admin_token, url))
        code = 0
        if group is None:
            await stop.wait()
        else:
            while not stop.is_set():
                exited = group.exited()
                if exited is not None:  # never on its own: something killed it
                    self.log.error("the server supervisor exited (%s): stopping", exited)
                    code = 1
                    break
                try:
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
                except asyncio.TimeoutError:
                    pass
        for task in (demo, self.watch_task):
            if task is not None:
                task.cancel()
        self.log.info("shutting down")
        if server is not None:
            server.stop()
            await asyncio.wait_for(server.close_all_connections(), timeout=5)
        return code

    def _serve_child(self, sockets: list, shared: SharedLoad) -> None:
        """One of several server processes (runs in a fork of the supervisor)."""
        asyncio.run(self._serve_sockets(sockets, shared))

    async def _serve_sockets(self, sockets: list, shared: SharedLoad) -> None:
        server = self._http_server()
        server.shared = shared  # the socket is shared with the other server processes
        server.add_sockets(sockets)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.stop()
        try:
            await asyncio.wait_for(server.close_all_connections(), timeout=5)
        except asyncio.TimeoutError:
            self.log.warning("server process %d: connections still open after 5 s, exiting anyway", os.getpid())


def main(argv: list[str] | None = None) -> None:
    app = CondaStoreServer()
    try:
        app.initialize(argv)
    except TraitError as exc:  # a configured value our validators refused: one line, no traceback
        sys.exit(f"conda-store-server: {exc}")
    try:
        app.start()
    except ForkUnsafe as exc:  # e.g. the config file started a thread: say so, no traceback
        sys.exit(f"conda-store-server: {exc}")
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C during shutdown
        sys.exit(130)


if __name__ == "__main__":
    main()

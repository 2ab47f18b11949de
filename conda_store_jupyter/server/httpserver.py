"""The HTTP server of ``conda-store-server``: plain HTTP that refuses TLS handshakes at once,
answers oversized request headers with 431 instead of dropping the connection, and — when
several processes share the listening socket — takes one new connection at a time."""

from __future__ import annotations

import json
import logging
import socket
from typing import Awaitable, Callable, Iterable

from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

log = logging.getLogger(__name__)

HEADER_READ_LIMIT = 1024 * 1024
"""Bytes of request line + headers tornado reads before it gives up and closes the connection
without a word. Kept far above :attr:`PlainHTTPServer.max_header_size` so that every realistic
oversized request (a 70 KB cookie or URL) is read and answered 431 by us."""


class PlainHTTPServer(HTTPServer):
    """``HTTPServer`` that hangs up at once on a TLS handshake sent to this plain-HTTP port.

    Registry clients told a registry is insecure (skopeo ``--tls-verify=false``, Docker's
    ``insecure-registries``) try HTTPS first and fall back to HTTP only when that fails. Tornado
    would wait for the end of HTTP headers that a TLS ClientHello never sends, so each pull stalled
    for Go's 10 s handshake timeout. Peeking at the first byte (``0x16`` starts every TLS handshake
    record, never an HTTP method) lets the client fail fast and retry over HTTP.

    While we wait for that first byte the connection is not yet tornado's, so none of its timeouts
    apply: a client that connects and sends nothing is closed after :attr:`first_byte_timeout`,
    or idle sockets would pile up until the process runs out of file descriptors.
    """

    first_byte_timeout: float = 60.0
    """Seconds a new connection may stay silent before it is closed."""

    max_header_size: int = 64 * 1024
    """Bytes of request line + headers above which a request is answered ``431 Request Header
    Fields Too Large`` (set from ``CondaStoreServer.max_header_size``)."""

    shared: "SharedLoad | None" = None
    """Set when several processes accept on one socket (``CondaStoreServer.processes``): then a
    wake-up accepts one connection, not all that wait (tornado's way), and a process holding more
    open connections than the least loaded one leaves new ones to it for a moment. Otherwise a
    few keep-alive clients connecting at once all land on whichever process woke first."""

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        if self.shared is None:
            super().add_sockets(sockets)
            return
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = _accept_one(sock, self._handle_connection, self.shared)

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        if self.shared is not None:
            self.shared.report(len(self._connections))

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _HeaderLimit(super().start_request(server_conn, request_conn), request_conn, self.max_header_size)

    def handle_stream(self, stream, address) -> None:
        sock, loop = stream.socket, IOLoop.current()
        fd = sock.fileno()

        def silent() -> None:
            loop.remove_handler(fd)
            stream.close()

        timer = loop.call_later(self.first_byte_timeout, silent)

        def readable(fd, _events) -> None:
            try:
                first = sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                return  # spurious wake-up: stay registered
            except OSError:
                first = b""
            loop.remove_handler(fd)
            loop.remove_timeout(timer)
            if first in (b"", b"\x16"):
                stream.close()
                return
            HTTPServer.handle_stream(self, stream, address)
            if self.shared is not None:
                self.shared.report(len(self._connections))

        loop.add_handler(fd, readable, IOLoop.READ)


class SharedLoad:
    """Open connections per server process, in memory shared by all of them (``counts``: one
    int64 slot per process, mapped before they were forked); ``index`` is this process's slot."""

    DEFER_SECONDS = 0.002
    """How long a busier process steps back before looking at a waiting connection again."""

    MAX_DEFER_SECONDS = 0.02
    """It accepts anyway after this long: a stuck or slow least-loaded process must not make
    clients wait."""

    def __init__(self, counts: memoryview, index: int) -> None:
        self.counts, self.index = counts, index
        self.counts[index] = 0

    def report(self, open_connections: int) -> None:
        self.counts[self.index] = open_connections

    def busier_than_the_least(self) -> bool:
        return self.counts[self.index] > min(self.counts)


def _accept_one(sock: socket.socket, callback: Callable[[socket.socket, object], None],
                shared: SharedLoad) -> Callable[[], None]:
    """``tornado.netutil.add_accept_handler`` taking at most one connection per readiness event
    (the socket stays readable while more wait, so the loop calls us again), after letting a less
    loaded process take it first (see :class:`SharedLoad`)."""
    loop = IOLoop.current()
    removed = False
    deferring_since: float | None = None

    def resume() -> None:
        if not removed:
            loop.add_handler(sock, ready, IOLoop.READ)

    def ready(_fd, _events) -> None:
        nonlocal deferring_since
        if removed:
            return
        if shared.busier_than_the_least():
            now = loop.time()
            deferring_since = now if deferring_since is None else deferring_since
            if now - deferring_since < shared.MAX_DEFER_SECONDS:
                loop.remove_handler(sock)
                loop.call_later(shared.DEFER_SECONDS, resume)
                return
        deferring_since = None
        try:
            connection, address = sock.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return  # another process took it, or the client gave up while it waited
        callback(connection, address)

    def remove() -> None:
        nonlocal removed
        loop.remove_handler(sock)
        removed = True

    loop.add_handler(sock, ready, IOLoop.READ)
    return remove


class _HeaderLimit(httputil.HTTPMessageDelegate):
    """Answers 431 for a request whose line + headers exceed ``limit``; else passes everything on.

    The answer is the REST error envelope, as every other error of the service. It is sent once
    the request's body has been read (and dropped): answering earlier makes tornado close the
    connection with unread data, which the client sees as a reset instead of the answer.
    """

    def __init__(self, delegate: httputil.HTTPMessageDelegate, connection: httputil.HTTPConnection,
                 limit: int) -> None:
        self.delegate, self.connection, self.limit = delegate, connection, limit
        self.refused: str | None = None  # the message, once refused

    def headers_received(self, start_line, headers: httputil.HTTPHeaders) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        size = len(start_line.method) + len(start_line.path) + len(start_line.version) + 4
        size += sum(len(name) + len(value) + 4 for name, value in headers.get_all())
        if size <= self.limit:
            return self.delegate.headers_received(start_line, headers)
        log.warning("431 %s %s... (%d bytes of request line and headers; the limit is %d)",
                    start_line.method, start_line.path[:80], size, self.limit)
        self.refused = f"request line and headers are {size} bytes; the limit is {self.limit}"
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return None if self.refused else self.delegate.data_received(chunk)

    def finish(self) -> None:
        if not self.refused:
            self.delegate.finish()
            return
        body = json.dumps({"status": "error", "data": None, "message": self.refused}).encode()
        self.connection.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", 431, "Request Header Fields Too Large"),
            httputil.HTTPHeaders({"Content-Type": "application/json; charset=UTF-8",
                                  "Content-Length": str(len(body)), "Cache-Control": "no-store"}),
            body,
        )
        self.connection.finish()

    def on_connection_close(self) -> None:
        if not self.refused:
            self.delegate.on_connection_close()

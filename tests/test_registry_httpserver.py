"""The plain-HTTP server in front of the API and registry: connections that never speak are closed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from typing import Iterator

from tornado import web
from tornado.netutil import bind_sockets

from conda_store_jupyter.server.httpserver import PlainHTTPServer


class _Hello(web.RequestHandler):
    def get(self) -> None:
        self.finish("hello")


@contextlib.contextmanager
def _server(first_byte_timeout: float) -> Iterator[int]:
    """A PlainHTTPServer on its own event loop thread; yields its port."""

    class Server(PlainHTTPServer):
        pass

    Server.first_byte_timeout = first_byte_timeout
    loop = asyncio.new_event_loop()
    ready: list[int] = []
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        sockets = bind_sockets(0, "127.0.0.1")
        server = Server(web.Application([(r"/", _Hello)]))
        server.add_sockets(sockets)
        ready.append(sockets[0].getsockname()[1])
        started.set()
        loop.run_forever()
        server.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_silent_connection_is_closed_after_the_first_byte_timeout() -> None:
    """Before: the server waited for a first byte forever (tornado's own timeouts start later)."""
    with _server(0.5) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        start = time.monotonic()
        try:
            assert sock.recv(1) == b""  # closed by the server, not a client timeout (10 s)
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - start
    assert 0.4 <= elapsed < 5, elapsed


def test_a_request_that_starts_in_time_is_not_cut_off() -> None:
    """The timer is cancelled by the first byte: a slow client that has started is tornado's to judge."""
    with _server(0.3) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"G")
        time.sleep(1.0)
        sock.sendall(b"ET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := sock.recv(4096):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"hello")

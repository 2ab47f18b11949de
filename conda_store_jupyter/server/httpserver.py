"""The HTTP server of ``conda-store-server``: plain HTTP that refuses TLS handshakes at once."""

from __future__ import annotations

import socket

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop


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

        loop.add_handler(fd, readable, IOLoop.READ)

"""A real HTTP server for a directory, in a thread of the test process (channels, pip indexes)."""

from __future__ import annotations

import contextlib
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without writing an access log line per request into pytest's output."""

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[SimpleHTTPRequestHandler], directory: Path) -> Iterator[int]:
    """Serve ``directory`` with ``handler`` on 127.0.0.1:<free port>; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()

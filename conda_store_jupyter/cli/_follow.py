"""Following a build's live log: the server-sent events of ``/api/v1/build/{id}/logs/stream/``.

The stream sends one ``data:`` event per log line (the last one of each batch with an ``id:``),
``: keep-alive`` comments while the build is quiet, and ``event: end`` when the build has
ended. A dropped connection is resumed from the last id (``?after=``), so no line is shown
twice or lost. Used by ``logs --follow``, ``env create/update`` and ``wait`` (which shows the
build's current step, the last ``-- <step>`` line).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from ._errors import CLIError, connection_error, http_error

RECONNECTS = 5
"""Consecutive failed reconnects after which following gives up (a server that stays away)."""

RECONNECT_DELAY = 1.0
"""Seconds before reconnecting after a dropped stream."""

READ_TIMEOUT = 60.0
"""Seconds without a byte before the stream counts as dropped (the server sends a keep-alive
comment every 15 s)."""


class NoLiveLog(CLIError):
    """The server has no live log stream (an upstream conda-store server): callers poll instead."""


@dataclass(frozen=True)
class LogLine:
    """One line of a build's log, or ``None`` text for the keep-alives (a chance to look at the clock)."""

    text: str | None


def step_of(line: str) -> str | None:
    """The step a log line starts (``-- solve`` → ``solve``), else None (see ``BuildLog.stage``)."""
    return line[3:].strip() or None if line.startswith("-- ") else None


def parse_events(lines: Iterator[str], on_id: Callable[[str], None]) -> Iterator[LogLine]:
    """SSE lines → log lines (``LogLine(None)`` for comments); stops at ``event: end``."""
    event, data = None, []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:  # a blank line dispatches the event
            if event == "end":
                return
            for text in data:
                yield LogLine(text)
            event, data = None, []
        elif line.startswith(":"):
            yield LogLine(None)
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value
            elif field == "id":
                on_id(value)


def follow(http: httpx.Client, base_url: str, build_id: int, credentials: str | None = None,
           read_timeout: float = READ_TIMEOUT) -> Iterator[LogLine]:
    """Every line of build ``build_id``'s log from the start, live, until the build ends."""
    path = f"/api/v1/build/{int(build_id)}/logs/stream/"
    state = {"after": None}
    failures = 0
    while True:
        params = {"after": state["after"]} if state["after"] else None
        try:
            with http.stream("GET", path, params=params, headers={"Accept": "text/event-stream"},
                             timeout=httpx.Timeout(30.0, read=read_timeout)) as resp:
                if resp.status_code == 404 and "text/event-stream" not in resp.headers.get("content-type", ""):
                    resp.read()
                    raise NoLiveLog(str(http_error(resp.status_code, "GET", str(resp.request.url), resp.content)))
                if resp.status_code >= 300:
                    resp.read()
                    raise http_error(resp.status_code, "GET", str(resp.request.url), resp.content, credentials)
                failures = 0
                yield from parse_events(resp.iter_lines(), lambda value: state.__setitem__("after", value))
                return
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            failures += 1
            if failures > RECONNECTS:
                if isinstance(exc, httpx.TimeoutException):
                    raise CLIError(f"lost the live log of build {build_id}: no answer from {base_url}") from None
                raise connection_error(base_url, exc) from None
            yield LogLine(None)
            time.sleep(RECONNECT_DELAY)

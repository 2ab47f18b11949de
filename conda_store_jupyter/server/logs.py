"""Build logs: ``GET /api/v1/build/{id}/logs/`` (everything so far) and ``…/logs/stream/``
(server-sent events following the live log until the build ends).

While a build runs its lines live in a Redis stream (``worker.logs``); once it ends, the stored
LOGS artifact is the truth and is served like any other artifact.
"""

from __future__ import annotations

import asyncio
import re

from tornado.iostream import StreamClosedError

from .. import api
from ..auth.rbac import Permission
from ..exceptions import ValidationError
from ..schema import BuildArtifactType
from ..worker import logs as live
from .artifacts import artifact_storage_key, send_artifact
from .base import BaseHandler, parse_id, run_sync

POLL_SECONDS = 0.25
"""How often a streaming request checks for new lines. Each check is a non-blocking XREAD, run
on the executor all the same: a slow or distant Redis must not stall the event loop."""

_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # ASCII digits only (not \d), whole value
"""A Redis stream entry id (``<ms>-<seq>``), the only thing ``Last-Event-ID``/``after`` may be."""
_STREAM_ID_MAX = 2**64 - 1

KEEPALIVE_SECONDS = 15.0
"""A comment line is sent this often so proxies do not close an idle event stream."""


def check_stream_id(value: str) -> None:
    """400 unless ``value`` is an entry id Redis accepts; anything else Redis answers with an
    error, which would be a 500. Both parts are unsigned 64-bit integers."""
    m = _STREAM_ID.fullmatch(value)
    if not m or max(int(part) for part in value.split("-")) > _STREAM_ID_MAX:
        raise ValidationError(f"Last-Event-ID/after must be a log event id like 1700000000000-0 "
                              f"(two integers below 2**64), got {value[:44]!r}")


class _LogHandler(BaseHandler):
    async def _authorized_build(self, build_id: str):
        wanted = parse_id(build_id)

        def work(db):
            build = api.get_build(db, wanted)  # environment, namespace and artifacts loaded eagerly
            env = build.environment
            self.authorize(db, Permission.ENVIRONMENT_READ, f"{env.namespace.name}/{env.name}")
            return build

        return await self.in_db(work)


class BuildLogsHandler(_LogHandler):
    async def get(self, build_id: str) -> None:
        build = await self._authorized_build(build_id)
        key = artifact_storage_key(build, BuildArtifactType.LOGS)
        if build.status.finished and key and await run_sync(self.store.storage.exists, key):
            await send_artifact(self, build, BuildArtifactType.LOGS)
            return
        text = await run_sync(live.stored_or_live_log, self.store, build.id)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text)


class BuildLogStreamHandler(_LogHandler):
    """``text/event-stream``: one ``data:`` event per line, ``event: end`` when the build ends.

    Reconnecting clients send ``Last-Event-ID`` (EventSource does this by itself) and continue
    where they stopped; ``?after=<id>`` does the same for scripts.
    """

    _closed = False

    def on_connection_close(self) -> None:
        self._closed = True

    async def get(self, build_id: str) -> None:
        build = await self._authorized_build(build_id)
        after = self.request.headers.get("Last-Event-ID") or self.query("after") or live.START
        check_stream_id(after)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        idle = 0.0
        try:
            while not self._closed:
                lines, last, finished = await run_sync(live.read_log, self.store, build.id, after)
                for i, line in enumerate(lines):
                    # The last event of a batch carries the stream position for reconnects.
                    event_id = f"id: {last}\n" if i == len(lines) - 1 else ""
                    self.write(f"{event_id}data: {line.replace(chr(13), '')}\n\n")
                after = last
                if finished:
                    self.write("event: end\ndata: build finished\n\n")
                    break
                if lines:
                    idle = 0.0
                    await self.flush()
                elif idle >= KEEPALIVE_SECONDS:
                    idle = 0.0
                    self.write(": keep-alive\n\n")
                    await self.flush()
                await asyncio.sleep(POLL_SECONDS)
                idle += POLL_SECONDS
            self.finish()
        except StreamClosedError:
            pass  # the client went away: nothing to clean up


HANDLERS = [
    (r"/api/v1/build/([^/]+)/logs/", BuildLogsHandler),
    (r"/api/v1/build/([^/]+)/logs/stream/", BuildLogStreamHandler),
]

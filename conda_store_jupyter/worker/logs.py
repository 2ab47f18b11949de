"""Live build logs: one Redis stream per build, the stored LOGS artifact once the build has ended.

While a build runs, every line the pipeline writes is ``XADD``-ed to ``conda-store:build:<id>:log``
(field ``l``), so the service page and ``conda-store wait`` can follow it from any server process
by entry id (``read_log(..., after=<last id>)``). When the build ends, the worker stores the full
log as the LOGS artifact, appends an end marker (field ``end`` = final status) and shortens the
stream's TTL: from then on the artifact is the truth and the stream only serves readers that were
already following it.

Why a stream and not pub/sub: a reader that connects late (page reload) must get the lines it
missed, and several readers must be able to follow one build independently. Entry ids give both.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..exceptions import NotFoundError
from ..schema import BuildStatus

if TYPE_CHECKING:
    from ..app import CondaStore

LOG_STREAM_KEY = "conda-store:build:{build_id}:log"
"""Redis stream holding a build's live log lines."""

LIVE_LOG_TTL = 7 * 24 * 3600
"""TTL (s) of a stream while its build runs, refreshed on every line: bounds the leak if the worker
dies and nobody finishes the stream (the reconciler normally does)."""

FINISHED_LOG_TTL = 600
"""TTL (s) of a stream after the build ended: readers mid-way have this long to catch up; later
readers get the stored LOGS artifact."""

LOG_STREAM_MAXLEN = 200_000
"""Approximate cap on stream entries (a runaway build must not fill Redis memory)."""

READ_BATCH = 10_000
"""Most entries returned by one :func:`read_log` call."""

START = "0-0"
"""Entry id meaning "from the beginning"."""

MISSING_END_GRACE = 5.0
"""Seconds a stream without an end marker must have been silent before the database is asked
whether its build ended. Normally the end marker follows the final commit within milliseconds
(after the link switch, which followers rely on); the marker is only missing when whoever ended
the build lost Redis at that moment, and followers must not hang forever on such a stream."""

DB_CHECK_INTERVAL = 2.0
"""Seconds between two database checks for one build by one reader process (see above)."""

_LINE = b"l"
END_FIELD = b"end"
"""Stream field of the entry that ends a build's live log (its value is the final status)."""

_last_db_check: dict[tuple[int, int], float] = {}
"""(id of the Redis client, build id) -> ``time.monotonic()`` of this process's last DB check."""


def log_stream_key(build_id: int) -> str:
    return LOG_STREAM_KEY.format(build_id=int(build_id))


def publish_line(store: "CondaStore", build_id: int, line: str) -> None:
    """Append one line to the build's live log (and keep the stream alive)."""
    key = log_stream_key(build_id)
    pipe = store.redis.pipeline(transaction=False)
    pipe.xadd(key, {_LINE: line}, maxlen=LOG_STREAM_MAXLEN, approximate=True)
    pipe.expire(key, LIVE_LOG_TTL)
    pipe.execute()


def finish_log(store: "CondaStore", build_id: int, status: BuildStatus | str) -> None:
    """Mark the live log finished (readers see ``finished=True``) and let the stream expire."""
    key = log_stream_key(build_id)
    pipe = store.redis.pipeline(transaction=False)
    pipe.xadd(key, {END_FIELD: str(getattr(status, "value", status))}, maxlen=LOG_STREAM_MAXLEN, approximate=True)
    pipe.expire(key, FINISHED_LOG_TTL)
    pipe.execute()


def log_finished(store: "CondaStore", build_id: int) -> bool:
    """True if the live log already has its end marker (so :func:`finish_log` is not repeated)."""
    tail = store.redis.xrevrange(log_stream_key(build_id), "+", "-", count=1)
    return bool(tail) and END_FIELD in tail[0][1]


def live_lines(store: "CondaStore", build_id: int) -> list[str]:
    """Every line currently in the stream (empty if it expired or never existed)."""
    entries = store.redis.xrange(log_stream_key(build_id), "-", "+")
    return [_decode(fields[_LINE]) for _id, fields in entries if _LINE in fields]


def read_log(
    store: "CondaStore", build_id: int, after: str = START, *, block_ms: int | None = None
) -> tuple[list[str], str, bool]:
    """New lines after entry id ``after``: ``(lines, last entry id, finished?)``.

    Pass the returned id back as ``after`` to follow the log. ``block_ms`` waits up to that long
    for new lines (use it from a thread or executor, never on an event loop). If the stream is
    gone and the build has ended, the stored log is returned when reading from the start
    (``after == "0-0"``), so a late reader still gets everything exactly once.
    """
    key = log_stream_key(build_id)
    after = after or START
    response = store.redis.xread({key: after}, count=READ_BATCH, block=block_ms or None)
    lines: list[str] = []
    last = after
    finished = False
    for _stream, entries in response or []:
        for entry_id, fields in entries:
            last = _decode(entry_id)
            if _LINE in fields:
                lines.append(_decode(fields[_LINE]))
            if END_FIELD in fields:
                finished = True
    if response:
        return lines, last, finished
    tail = store.redis.xrevrange(key, "+", "-", count=1)
    if tail:  # nothing new; finished if the stream already ended
        entry_id, fields = tail[0]
        return [], after, END_FIELD in fields or _ended_without_marker(store, build_id, _decode(entry_id))
    # No stream: either the build has not written anything yet, or it ended and the stream expired.
    build_finished, text = _stored_if_finished(store, build_id)
    if not build_finished:
        return [], after, False
    return (text.splitlines() if after == START and text else []), after, True


def stored_or_live_log(store: "CondaStore", build_id: int) -> str:
    """The build's full log so far: the stored LOGS artifact if there is one, else the live stream."""
    text = _stored_log(store, build_id)
    if text is not None:
        return text
    lines = live_lines(store, build_id)
    return "".join(f"{line}\n" for line in lines)


# -- helpers ------------------------------------------------------------------------------------
def _ended_without_marker(store: "CondaStore", build_id: int, last_entry_id: str) -> bool:
    """True if the stream has been silent for ``MISSING_END_GRACE`` and the database says the build
    ended; the database is asked at most every ``DB_CHECK_INTERVAL`` per build and process."""
    seconds, micros = store.redis.time()  # entry ids carry the Redis clock's milliseconds
    if seconds + micros / 1e6 - int(last_entry_id.split("-", 1)[0]) / 1000 < MISSING_END_GRACE:
        return False
    now = time.monotonic()
    if len(_last_db_check) > 10_000:  # readers of long-gone builds
        for stale in [k for k, t in _last_db_check.items() if now - t > 10 * DB_CHECK_INTERVAL]:
            _last_db_check.pop(stale, None)
    slot = (id(store.redis), int(build_id))
    if now - _last_db_check.get(slot, float("-inf")) < DB_CHECK_INTERVAL:
        return False
    _last_db_check[slot] = now
    status, _key = _log_artifact_key(store, build_id)
    return BuildStatus(status).finished


def _decode(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _log_artifact_key(store: "CondaStore", build_id: int) -> tuple[BuildStatus, str]:
    from .. import orm

    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        if build is None:
            raise NotFoundError(f"build {build_id} does not exist")
        return build.status, build.log_key()


def _stored_log(store: "CondaStore", build_id: int) -> str | None:
    _status, key = _log_artifact_key(store, build_id)
    if not store.storage.exists(key):
        return None
    return store.storage.get_bytes(key).decode("utf-8", "replace")


def _stored_if_finished(store: "CondaStore", build_id: int) -> tuple[bool, str]:
    status, key = _log_artifact_key(store, build_id)
    if not BuildStatus(status).finished:
        return False, ""
    if not store.storage.exists(key):
        return True, ""
    return True, store.storage.get_bytes(key).decode("utf-8", "replace")

"""``BuildLog``: the one place a build writes human-readable progress.

Each line goes to the log file (the stored LOGS artifact) and, optionally, to a ``sink`` callback
(the worker publishes lines to a Redis stream for live viewing). Stages are timed and named
(``== solve: 0.004 s``) so a slow build shows where its time went.

A log is chronological and its last line is the build's final status (``BUILD FAILED: …``), so
``tail`` never makes a failed build look like a success. A failure's cause is *also* put on top
of the stored file (:func:`final_log`): whoever opens a failed build's log reads the reason first,
not after hundreds of lines of progress. The live stream cannot put anything on top of lines
already sent; it gets the same lines in the same order, the summary excepted.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable, Iterator, TextIO

from ..urls import redact_text
from .records import StageTiming

Sink = Callable[[str], None]

FAILED_LINE = "BUILD FAILED: {reason}"
"""The final line of a failed build's log (also its summary on top of the stored file)."""


def final_log(body: str, final_line: str, *, summary: bool) -> str:
    """A finished build's stored log: ``body`` (in the order it was written), then ``final_line``.

    With ``summary`` (failures), ``final_line`` also comes first, followed by a blank line, when
    there is a body to put it on top of (a log of just the final line says it once).
    """
    if body and not body.endswith("\n"):
        body += "\n"
    head = f"{final_line}\n\n" if summary and body.strip() else ""
    return f"{head}{body}{final_line}\n"


class BuildLog:
    """Line-oriented build log written to ``path`` and mirrored to ``sink``.

    Use as a context manager (or call :meth:`close`). A failing sink never breaks the build:
    live logs are a convenience, the file is the record. ``append`` keeps what is already in the
    file (the worker writes the first lines before the build process starts).
    """

    def __init__(self, path: Path | str, sink: Sink | None = None, *, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sink = sink
        self._file: TextIO | None = open(self.path, "a" if append else "w", encoding="utf-8", errors="replace")
        self._timings: list[StageTiming] = []
        self.failure: str | None = None

    # -- writing --------------------------------------------------------------------------------
    def write(self, text: str) -> None:
        """Write one or more lines (a trailing newline is added when missing).

        Logs are shown to every reader of the environment, so URL credentials are redacted here,
        the one place all log text passes through. Nothing is written after :meth:`fail`: the
        final status stays the last line.
        """
        if self.failure is not None:
            return
        self._write(redact_text(text))

    __call__ = write

    def _write(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            if self._file is not None:
                self._file.write(line + "\n")
            if self.sink is not None:
                try:
                    self.sink(line)
                except Exception:  # noqa: BLE001 - a broken live stream must not fail the build
                    self.sink = None
                    if self._file is not None:
                        self._file.write("(live log stream failed; continuing with the file only)\n")
        if self._file is not None:
            self._file.flush()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; on exit (success or not) write ``== name: 0.004 s`` and record the timing."""
        self.write(f"-- {name}")
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self._timings.append(StageTiming(name, seconds))
            self.write(f"== {name}: {seconds:.3f} s")

    @property
    def timings(self) -> tuple[StageTiming, ...]:
        return tuple(self._timings)

    # -- failure --------------------------------------------------------------------------------
    def fail(self, reason: str) -> None:
        """End the log with the build's failure: ``BUILD FAILED: reason`` as its last line (file and
        sink), and the same line on top of the file. Later writes are dropped; a second call is
        ignored (the first cause is the one that ended the build)."""
        if self.failure is not None:
            return
        reason = redact_text(reason)
        line = FAILED_LINE.format(reason=reason)
        self._write(line)
        self.failure = reason
        if self._file is not None:
            self._file.close()
            self._file = None
        body = self.path.read_text(encoding="utf-8", errors="replace") if self.path.exists() else ""
        if body.endswith(f"{line}\n"):
            body = body[: -len(line) - 1]
        # Write next to the file and rename, so a reader never sees a truncated log.
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(final_log(body, line, summary=True), encoding="utf-8")
        os.replace(tmp, self.path)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "BuildLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

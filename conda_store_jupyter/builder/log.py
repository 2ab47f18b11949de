"""``BuildLog``: the one place a build writes human-readable progress.

Each line goes to the log file (the stored LOGS artifact) and, optionally, to a ``sink`` callback
(the worker publishes lines to a Redis stream for live viewing). Stages are timed and named
(``== solve: 0.004 s``) so a slow build shows where its time went. On failure the cause paragraph
is *prepended* to the file: whoever opens a failed build's log reads the reason first, not
after hundreds of lines of progress.
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


class BuildLog:
    """Line-oriented build log written to ``path`` and mirrored to ``sink``.

    Use as a context manager (or call :meth:`close`). A failing sink never breaks the build:
    live logs are a convenience, the file is the record.
    """

    def __init__(self, path: Path | str, sink: Sink | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sink = sink
        self._file: TextIO | None = open(self.path, "w", encoding="utf-8", errors="replace")
        self._timings: list[StageTiming] = []
        self.failure: str | None = None

    # -- writing --------------------------------------------------------------------------------
    def write(self, text: str) -> None:
        """Write one or more lines (a trailing newline is added when missing).

        Logs are shown to every reader of the environment, so URL credentials are redacted here,
        the one place all log text passes through.
        """
        for line in redact_text(text).splitlines() or [""]:
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

    __call__ = write

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
        """Record the build's failure: put ``reason`` at the very top of the log file.

        The rest of the log (progress, tool output, traceback) stays below it. The sink also gets
        the reason, last, so a live viewer sees it without reloading.
        """
        reason = redact_text(reason)
        self.failure = reason
        paragraph = f"BUILD FAILED: {reason}\n\n"
        if self._file is not None:
            self._file.close()
            self._file = None
        body = self.path.read_text(encoding="utf-8", errors="replace") if self.path.exists() else ""
        # Write next to the file and rename, so a reader never sees a truncated log.
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(paragraph + body, encoding="utf-8")
        os.replace(tmp, self.path)
        self._file = open(self.path, "a", encoding="utf-8", errors="replace")
        if self.sink is not None:
            with contextlib.suppress(Exception):
                self.sink(f"BUILD FAILED: {reason}")

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "BuildLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

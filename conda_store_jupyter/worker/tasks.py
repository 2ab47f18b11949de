"""RQ job functions, and the supervised child process that runs one build.

Process layout of a running build (why each level exists)::

    conda-store-worker          RQ worker (one thread, runner.BuildWorker): takes jobs, reconciles;
    │                           the *zygote*: it has imported everything a build needs (zygote.py)
    └── work horse (fork)       RQ's per-job process: runs build_environment() = the *supervisor*
        └── build child (fork)  _child_main(): runs the pipeline, records its outcome (``csj-build``)
            └── uv, ...         in the child's own session / process group

The supervisor writes the build's first log line before starting the child, and the child
appends to that file, so a build stopped at any moment keeps a log of everything it wrote. Every
state change goes through :mod:`.lifecycle`.

The pipeline runs in a forked child in its **own process group** (its own session), so the
supervisor can stop *everything* the build started — uv, conda-pack threads, anything — with one
``killpg`` while itself staying alive to record the outcome. That is what makes cancel ("canceled
by user" in the log, state CANCELED) and the per-build timeout (FAILED) reliable: the process that
writes the final state is never the one being killed. The child is forked, not started afresh,
so no interpreter start-up or import is on the build's critical path; ``zygote.py`` says what
makes that fork safe (no threads at fork time, no connection shared with the parent).
``python -m conda_store_jupyter.worker.tasks run-build <id>`` still runs a build in a process
of its own (by hand, tests).

The supervisor polls every ``POLL_INTERVAL`` for: the child's exit, the cancel flag, the deadline,
SIGTERM (its worker's cold shutdown or watchdog) and the death of its own parent (worker
SIGKILLed). The last two *interrupt* the build: it is queued again as its next attempt
(``reconcile.interrupt``), not failed. Every ``STATUS_INTERVAL`` it refreshes the build's
heartbeat key, so the reconciler (``reconcile.py``) can tell a live build from an orphaned one,
and re-reads the build's status and attempt: a build someone else already ended or gave to a
newer attempt (the reconciler, after a Redis or network outage hid our heartbeat) is stopped at
once instead of running on into a prefix nobody will use. The child watches its parent too and
kills its own process group if the supervisor disappears; it records its outcome only for its
own attempt (``JOB_ID_ENV``).

COMPLETED is the point of no return. Once the child committed it, the supervisor no longer stops
the child for a cancel or the deadline (only after ``TAIL_GRACE``, or if the worker dies): the
child is only switching the link, ending the live log and queueing the artifact jobs. The DB status is
the flag, not a separate Redis key, because the commit itself is the moment that matters and a
second flag could disagree with it. Whatever way the child ended, ``_after_child`` re-does that
tail idempotently for a COMPLETED build, so a kill in the window between the commit and the tail
(``TAIL_GRACE`` exceeded, the child crashed) never leaves a finished build without its link.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import CondaStoreError, NotFoundError
from ..schema import BuildArtifactType, BuildStatus
from . import lifecycle
from .artifacts import queue_pending_artifacts
from .links import sync_environment_link
from .queue import (
    CANCELED_BY_USER,
    CONFIG_ENV,
    JOB_ID_ENV,
    MIGRATED_ENV,
    REDIS_URL_ENV,
    cancel_key,
    heartbeat_key,
    work_dir,
)
from .zygote import ForkedChild, adopted_store, detach_store, fork_child

if TYPE_CHECKING:
    from ..app import CondaStore
    from ..builder.records import BuildOutputs

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25
"""Seconds between supervisor checks (child exit, cancel flag, deadline, parent alive)."""

HEARTBEAT_INTERVAL = 2.0
"""Seconds between heartbeats of a running build; the reconciler's ``stale_after`` is far larger."""

STATUS_INTERVAL = HEARTBEAT_INTERVAL
"""Seconds between the supervisor's reads of the build's status (stop a build ended elsewhere)."""

HEARTBEAT_TTL = 3600
"""TTL (s) of the heartbeat key: only bounds the leak; staleness is judged by its value, which is
the Redis server's own ``TIME`` (one clock for every host, see ``reconcile._heartbeat_age``)."""

TAIL_GRACE = 120.0
"""Seconds a child that committed COMPLETED gets to finish its tail before it is killed anyway."""

TERM_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL when stopping a build's process group."""

STDERR_TAIL = 2000
"""Characters of the build child's stderr quoted in the reason when it crashes."""

# -- loading ------------------------------------------------------------------------------------
def load_store(config_path: str | None = None) -> "CondaStore":
    """Load ``CondaStore`` for a job.

    The worker's own config (``$CONDA_STORE_CONFIG``, set by ``conda-store-worker --config``) wins
    over the path the server put in the job: on another host the server's path may not exist, and
    the worker's operator knows where its config is. ``$CONDA_STORE_REDIS_URL`` overrides the Redis
    URL (EmbeddedServices uses it to point its workers at the private redis-server).
    """
    from ..app import CondaStore

    adopted = adopted_store(job_config_path(config_path) or None)
    if adopted is not None:  # a job forked from conda-store-worker: its store, already loaded (zygote.py)
        return adopted
    overrides: dict[str, object] = {}
    if os.environ.get(REDIS_URL_ENV):
        overrides["redis_url"] = os.environ[REDIS_URL_ENV]
    if os.environ.get(MIGRATED_ENV):
        overrides["upgrade_database"] = False
    return CondaStore.from_config_file(job_config_path(config_path) or None, **overrides)


def job_config_path(config_path: str | None) -> str | None:
    """The worker's own config file (``$CONDA_STORE_CONFIG``) if it has one, else the job's."""
    return os.environ.get(CONFIG_ENV) or config_path


SUPERVISOR_GRACE = 5.0
"""Seconds past ``build_timeout`` before the supervisor stops a build that did not stop itself."""


def log_file(store: "CondaStore", build_id: int) -> Path:
    """The build's log file: started by its supervisor, continued by the build child."""
    return work_dir(store, build_id) / "build.log"


# -- the RQ job: supervisor ---------------------------------------------------------------------
@dataclass(frozen=True)
class ChildExit:
    """How the supervised build child ended."""

    returncode: int | None
    stopped: BuildStatus | None = None  # set when the supervisor stopped the build itself
    reason: str | None = None
    interrupted: str | None = None
    """Set when the build was stopped from outside (its worker stopped or died): it is queued
    again (``reconcile.interrupt``), not failed."""


def build_environment(build_id: int, config_path: str | None = None) -> None:
    """RQ job: claim build ``build_id`` (QUEUED -> BUILDING), run it in a supervised child process."""
    from rq import get_current_job

    store = load_store(config_path)
    job = get_current_job()
    beat(store, build_id)  # before the claim, so the reconciler never sees BUILDING without a heartbeat
    # Only the build's current attempt may claim it: a job of an attempt the reconciler has
    # replaced (Redis kept it, or a worker took it twice) must not run the build again.
    expected_job_id = job.id if job is not None else None
    if not lifecycle.claim(store, build_id, job_id=expected_job_id):
        log.info("build %s is no longer QUEUED as job %s (canceled or handled elsewhere); skipping",
                 build_id, expected_job_id)
        if _is_current_attempt(store, build_id, expected_job_id):
            store.redis.delete(heartbeat_key(build_id))
        return
    try:
        start_log(store, build_id)
        outcome = supervise(store, build_id, config_path, job_id=expected_job_id)
        _after_child(store, build_id, outcome, job_id=expected_job_id)
    finally:
        # A newer attempt (after the reconciler gave up on this one) owns the keys and work dir.
        if _is_current_attempt(store, build_id, expected_job_id):
            with contextlib.suppress(Exception):  # Redis may be down; the keys expire anyway
                store.redis.delete(heartbeat_key(build_id), cancel_key(build_id))
            shutil.rmtree(work_dir(store, build_id), ignore_errors=True)


def _is_current_attempt(store: "CondaStore", build_id: int, job_id: str | None) -> bool:
    """Is ``job_id`` still the build's attempt in the database (True when there is no job)?"""
    if job_id is None:
        return True
    from .. import orm

    try:
        with store.session() as db:
            build = db.get(orm.Build, int(build_id))
            return build is not None and build.job_id == job_id
    except Exception:  # noqa: BLE001 - database down: leave the keys (they expire) and files
        return False


def start_log(store: "CondaStore", build_id: int) -> None:
    """The build's first log line, written by its supervisor before the build process starts, so a
    build stopped at any moment (before or while it is forked) has a log of its own."""
    from .. import orm
    from .logs import live_lines, publish_line

    with store.session() as db:
        build_key = db.get(orm.Build, int(build_id)).build_key
    line = f"build {int(build_id)} ({build_key}) on {socket.gethostname()}, worker pid {os.getpid()}"
    try:  # what is already in the live log (submission warnings, an earlier attempt) stays in the file
        earlier = live_lines(store, build_id)
    except Exception as exc:  # noqa: BLE001 - the live log is a convenience; the build goes on without it
        log.warning("build %s: could not read its live log: %s", build_id, exc)
        earlier = []
    path = log_file(store, build_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{text}\n" for text in [*earlier, line]), encoding="utf-8")
    try:
        publish_line(store, build_id, line)
    except Exception as exc:  # noqa: BLE001 - the file is the record; the stream is a convenience
        log.warning("build %s: could not publish to its live log: %s", build_id, exc)


def beat(store: "CondaStore", build_id: int) -> None:
    """Record a sign of life stamped with the Redis server's clock (worker clocks may disagree)."""
    seconds, micros = store.redis.time()
    store.redis.set(heartbeat_key(build_id), f"{seconds}.{micros:06d}", ex=HEARTBEAT_TTL)


def build_status(store: "CondaStore", build_id: int, job_id: str | None = None) -> BuildStatus | None:
    """The build's status; QUEUED if its current attempt is no longer ``job_id`` (when given)."""
    from .. import orm

    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        if build is None:
            return None
        if job_id is not None and build.job_id != job_id and build.status == BuildStatus.BUILDING:
            return BuildStatus.QUEUED  # another attempt is running it: this one is not BUILDING any more
        return BuildStatus(build.status)


def supervise(store: "CondaStore", build_id: int, config_path: str | None, *, job_id: str | None = None) -> ChildExit:
    """Run the build child; stop its process group on cancel, timeout, worker death or SIGTERM.

    Whatever happens here (RQ's own job timeout raising in this process included), the child's
    process group is killed before this returns: no build outlives its supervisor.
    """
    wd = work_dir(store, build_id)
    wd.mkdir(parents=True, exist_ok=True)
    parent = os.getppid()
    limit = store.build_time_limit
    # The build enforces its limit itself (the pipeline stops, logs and records why); this deadline,
    # a little later, is the backstop for a child that does not stop. Equal deadlines raced: both
    # sides ended the build at the same moment and the log could lose the build's own lines.
    deadline = time.monotonic() + limit + SUPERVISOR_GRACE if limit is not None else float("inf")
    next_beat = next_status = 0.0
    committed_at: float | None = None  # monotonic time the child was first seen COMPLETED
    terminated = threading.Event()

    def on_sigterm(signum, frame) -> None:  # the worker's cold shutdown (or its watchdog)
        terminated.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm) if threading.current_thread() is threading.main_thread() \
        else None
    proc: ForkedChild | None = None
    try:
        proc = fork_child(lambda: _child_main(store, build_id, job_id), output=wd / "child.stderr")
        stopped: BuildStatus | None = None
        reason: str | None = None
        interrupted: str | None = None
        while True:
            try:
                rc = proc.wait(timeout=POLL_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            try:
                if now >= next_beat:
                    beat(store, build_id)
                    next_beat = now + HEARTBEAT_INTERVAL
                flag = store.redis.get(cancel_key(build_id))
            except Exception as exc:  # noqa: BLE001 - Redis hiccup: keep building, retry next tick
                log.warning("build %s: Redis unavailable while supervising: %s", build_id, exc)
                flag = None
            status: BuildStatus | None = BuildStatus.BUILDING
            wants_stop = flag is not None or now >= deadline or terminated.is_set()
            if committed_at is None and (now >= next_status or wants_stop):
                # Read when due, and always right before stopping for a cancel or the deadline: a
                # child that just committed COMPLETED must be let finish, not killed.
                next_status = now + STATUS_INTERVAL
                try:
                    status = build_status(store, build_id, job_id)
                except Exception as exc:  # noqa: BLE001 - DB hiccup: keep building, retry later
                    log.warning("build %s: database unavailable while supervising: %s", build_id, exc)
                if status == BuildStatus.COMPLETED:
                    committed_at = now
            if os.getppid() != parent:
                interrupted = "the worker running it stopped"
            elif terminated.is_set() and committed_at is None:
                interrupted = "its worker was shut down"
            elif committed_at is not None:
                if now - committed_at > TAIL_GRACE or terminated.is_set():
                    log.warning("build %s: COMPLETED but its process did not exit (%s); stopping it", build_id,
                                "worker shutting down" if terminated.is_set() else f"within {TAIL_GRACE} s")
                    rc = stop_process_group(proc)
                    break
                continue
            elif status != BuildStatus.BUILDING:
                # Ended elsewhere (reconciler, deleted), or queued again as a newer attempt:
                # whoever did that owns the state now.
                log.warning("build %s is %s; stopping its process", build_id, getattr(status, "value", status))
                rc = stop_process_group(proc)
                break
            elif flag is not None:
                stopped, reason = BuildStatus.CANCELED, flag.decode("utf-8", "replace") or CANCELED_BY_USER
            elif now >= deadline:
                stopped = BuildStatus.FAILED
                reason = (f"the build took longer than its {store.build_timeout} s limit "
                          "(CondaStore.build_timeout) and was stopped")
            if stopped is not None or interrupted is not None:
                rc = stop_process_group(proc)
                break
        return ChildExit(returncode=rc, stopped=stopped, reason=reason, interrupted=interrupted)
    finally:
        # Whatever the child left in its group (a stray uv) goes with it, and so does the child
        # itself if we leave by an exception (RQ's job timeout, a bug).
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=TERM_GRACE)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def stop_process_group(proc: "ForkedChild") -> int | None:
    """SIGTERM the child's whole process group, SIGKILL it after ``TERM_GRACE``; return the exit code."""
    for sig, wait in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, TERM_GRACE)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


def _after_child(store: "CondaStore", build_id: int, outcome: ChildExit, job_id: str | None = None) -> None:
    """Record the outcome when the child could not (it was stopped, or it crashed), then make sure
    the final state is complete: a COMPLETED build has its tail, any other build no prefix."""
    from ..urls import redact_text
    from .reconcile import interrupt

    if not _is_current_attempt(store, build_id, job_id):
        return  # the reconciler gave the build to a newer attempt: it owns state, prefix and log now
    if outcome.interrupted is not None:
        # Not the build's fault: queue it again (or fail it once it used all its attempts).
        # Only if the child did not manage to commit a final state first.
        if build_status(store, build_id, job_id) == BuildStatus.BUILDING:
            interrupt(store, build_id, BuildStatus.BUILDING, job_id, outcome.interrupted)
        return
    if outcome.stopped is not None:
        end_abnormally(store, build_id, outcome.stopped, outcome.reason or "stopped", job_id=job_id)
    elif outcome.returncode != 0:
        rc = outcome.returncode
        how = f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with code {rc}"
        tail = ""
        err = work_dir(store, build_id) / "child.stderr"
        if err.exists():  # tracebacks may quote index URLs with credentials
            tail = redact_text(err.read_text(errors="replace")[-STDERR_TAIL:]).strip()
        reason = f"the build process {how}" + (f": {tail.splitlines()[-1]}" if tail else "")
        end_abnormally(store, build_id, BuildStatus.FAILED, reason, extra=tail, job_id=job_id)
    # The child is dead: nothing of this build writes any more, so both steps below are safe.
    status = build_status(store, build_id)
    if status == BuildStatus.COMPLETED:
        finish_completed(store, build_id)
    elif status is not None and status.finished:
        # Ended by someone else while the child kept writing (or by us above): no half-built prefix.
        shutil.rmtree(_prefix_of(store, build_id), ignore_errors=True)


def _prefix_of(store: "CondaStore", build_id: int) -> Path:
    from .. import orm

    with store.session() as db:
        return db.get(orm.Build, int(build_id)).prefix_path(store.store_path)


def finish_completed(store: "CondaStore", build_id: int) -> None:
    """The tail of a COMPLETED build, idempotent: artifact jobs queued, link switched, live log ended.

    The child runs it right after its commit; the supervisor runs it again after the child ended,
    in case the child was killed or crashed between the commit and the end of the tail.
    """
    from .. import orm
    from .logs import finish_log, log_finished
    from .settings import build_settings_for

    with store.session() as db:
        environment_id = db.get(orm.Build, int(build_id)).environment_id
    # Artifact jobs first: they need neither the link nor the log's end, and every moment spent
    # before queueing them is one the archive comes later. The archive and image jobs
    # (worker/archives.py, worker/images.py) run on the artifacts queue after COMPLETED, so they
    # never delay the environment and a failed one never fails the build. Their rows are PENDING
    # since the COMPLETED commit: a job lost on the way is found by repair.
    try:
        queue_pending_artifacts(store, build_id)
    except Exception as exc:  # noqa: BLE001 - the build is done; repair queues the jobs again
        log.warning("build %s: could not queue its artifact jobs: %s", build_id, exc)
    # Link first, then end the live log: whoever follows the log until "finished" (conda-store
    # wait) finds the environment link already switched.
    sync_environment_link(store, environment_id)
    with contextlib.suppress(Exception):
        if not log_finished(store, build_id):
            finish_log(store, build_id, BuildStatus.COMPLETED)


def end_abnormally(store: "CondaStore", build_id: int, status: BuildStatus, reason: str, extra: str = "",
                   job_id: str | None = None) -> bool:
    """BUILDING -> ``status`` with ``reason`` (the build child is dead); remove its half-built prefix.

    Its log keeps everything the build wrote (its log file, same host; else what reached the live
    stream), then ``extra`` (e.g. the crashed process's stderr), then the final status line.
    """
    from .. import orm
    from .logs import live_lines

    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        if build.status != BuildStatus.BUILDING:
            return False
        prefix = build.prefix_path(store.store_path)
    # The child is dead by now, so nobody else writes the prefix; remove it before the final state
    # is visible, so a CANCELED/FAILED build never shows a half-built environment.
    shutil.rmtree(prefix, ignore_errors=True)
    path = log_file(store, build_id)
    body = path.read_text(errors="replace") if path.exists() else "".join(
        f"{line}\n" for line in live_lines(store, build_id))
    return lifecycle.end(store, build_id, (BuildStatus.BUILDING,), status, reason, body=body,
                         tail=[extra] if extra else (), job_id=job_id)


# -- the build child ----------------------------------------------------------------------------
def _child_main(store: "CondaStore", build_id: int, job_id: str | None) -> int:
    """The build child, forked from its supervisor (``zygote.fork_child``): run the build."""
    _watch_parent()
    detach_store(store)
    os.environ.pop(JOB_ID_ENV, None)
    if job_id is not None:
        os.environ[JOB_ID_ENV] = job_id  # run_build records the outcome for this attempt only
    status = run_build(store, build_id)
    return 0 if status in (BuildStatus.COMPLETED, BuildStatus.FAILED) else 1


def _watch_parent() -> None:
    """If the supervisor dies (SIGKILL, RQ timeout), kill this whole process group (uv included)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def load_specification(data: dict):
    """The stored specification: the environment.yaml form, or a dumped ``Specification``."""
    from ..schema import Specification, specification_from_dict

    if "pip" in data:  # Specification.model_dump(): pip is already split out
        return Specification.model_validate(data)
    return specification_from_dict(data)


def run_build(store: "CondaStore", build_id: int) -> BuildStatus:
    """Run the pipeline for a BUILDING build and record COMPLETED or FAILED (in the build child)."""
    from .. import orm
    from ..builder.log import BuildLog
    from ..builder.pipeline import run_pipeline
    from ..builder.records import BuildPaths
    from .logs import publish_line
    from .settings import build_settings_for, settings_from_store

    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        if build is None:
            raise NotFoundError(f"build {build_id} does not exist")
        spec_data = dict(build.specification.spec)
        is_lockfile = bool(build.specification.is_lockfile)
        build_key = build.build_key
        prefix = build.prefix_path(store.store_path)
    wd = work_dir(store, build_id)
    paths = BuildPaths(prefix=prefix, lockfile=wd / "conda-lock.yml", yaml=wd / "environment.yaml",
                       archive=wd / "environment.tar.gz", log=log_file(store, build_id))
    prefix.parent.mkdir(parents=True, exist_ok=True)

    def sink(line: str) -> None:
        publish_line(store, build_id, line)

    attempt = os.environ.get(JOB_ID_ENV)  # the supervisor's job: only that attempt may record an outcome
    # append: the supervisor wrote the first line (start_log)
    with BuildLog(paths.log, sink=sink, append=True) as blog:
        blog.write(f"build process pid {os.getpid()}")
        try:
            effective = build_settings_for(store, build_id)

            def without_archive(settings):
                # The archive is an artifact job after COMPLETED (worker/archives.py), not a build step.
                return dataclasses.replace(settings, artifacts=settings.artifacts - {BuildArtifactType.CONDA_PACK})

            if is_lockfile:  # install exactly the submitted lockfile, no solve
                from ..builder.from_lock import run_lock_pipeline
                from ..lockspec import LockSpecification

                lock = LockSpecification.from_stored(spec_data)
                outputs = run_lock_pipeline(lock, without_archive(settings_from_store(store, lock, effective)),
                                            paths, blog)
            else:
                spec = load_specification(spec_data)
                outputs = run_pipeline(spec, without_archive(settings_from_store(store, spec, effective)), paths, blog)
            with blog.stage("store artifacts"):
                keys = _store_artifacts(store, build_key, outputs)
        except CondaStoreError as err:  # BuildError from the pipeline, storage errors, bad spec
            if blog.failure is None:  # the pipeline ends its log itself; the rest is ended here
                blog.fail(" ".join(str(err).split()))
            blog.close()
            lifecycle.fail(store, build_id, blog.failure or str(err), log_file=paths.log, lockfile=paths.lockfile,
                           job_id=attempt)
            return BuildStatus.FAILED
        blog.write(f"BUILD COMPLETED in {sum(t.seconds for t in blog.timings):.1f} s")
    result = lifecycle.BuildResult(prefix=outputs.prefix, size_bytes=outputs.size_bytes, log=paths.log,
                                   artifacts=keys, packages=outputs.packages)
    if not lifecycle.complete(store, build_id, result, job_id=attempt):
        return BuildStatus.FAILED  # canceled or reconciled meanwhile: the other side owns the final state
    finish_completed(store, build_id)
    return BuildStatus.COMPLETED


def _store_artifacts(store: "CondaStore", build_key: str, outputs: "BuildOutputs") -> dict[BuildArtifactType, str]:
    """Upload the build's file artifacts (before any database transaction: see ``lifecycle``)."""
    from ..exceptions import ArtifactError
    from ..storage.base import artifact_key

    files = {BuildArtifactType.LOCKFILE: (outputs.lockfile, "text/yaml"),
             BuildArtifactType.YAML: (outputs.yaml, "text/yaml")}
    keys = {}
    for kind, (path, content_type) in files.items():
        key = artifact_key(kind, build_key)
        try:
            store.storage.put_file(key, path, content_type=content_type)
        except Exception as exc:  # noqa: BLE001 - any storage failure fails the build with its reason
            raise ArtifactError(f"storing the {kind.value} artifact failed: {type(exc).__name__}: {exc}") from exc
        keys[kind] = key
    return keys


# -- python -m conda_store_jupyter.worker.tasks run-build <id> ----------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conda_store_jupyter.worker.tasks",
                                     description="Run one build in this process (used by the worker).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run-build", help="run a BUILDING build and record its outcome")
    run.add_argument("build_id", type=int)
    run.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    _watch_parent()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    store = load_store(args.config)
    status = run_build(store, args.build_id)
    return 0 if status in (BuildStatus.COMPLETED, BuildStatus.FAILED) else 1


if __name__ == "__main__":
    sys.exit(main())

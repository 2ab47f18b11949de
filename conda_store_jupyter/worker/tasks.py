"""RQ job functions, and the supervised child process that runs one build.

Process layout of a running build (why each level exists)::

    conda-store-worker          RQ worker (one thread, runner.BuildWorker): takes jobs, reconciles
    └── work horse (fork)       RQ's per-job process: runs build_environment() = the *supervisor*
        └── build child         `python -m conda_store_jupyter.worker.tasks run-build <id>`
            └── uv, ...         in the child's own session / process group

The pipeline runs in a fresh interpreter in its **own process group** (``start_new_session``), so
the supervisor can stop *everything* the build started — uv, conda-pack threads, anything — with one
``killpg`` while itself staying alive to record the outcome. That is what makes cancel ("canceled
by user" in the log, state CANCELED) and the per-build timeout (FAILED) reliable: the process that
writes the final state is never the one being killed. A fresh interpreter (not a fork) also avoids
inheriting the worker's sockets and the thread state of native libraries.

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
child is only switching the link, ending the live log and queueing the image. The DB status is
the flag, not a separate Redis key, because the commit itself is the moment that matters and a
second flag could disagree with it. Whatever way the child ended, ``_after_child`` re-does that
tail idempotently for a COMPLETED build, so a kill in the window between the commit and the tail
(``TAIL_GRACE`` exceeded, the child crashed) never leaves a finished build without its link.
"""

from __future__ import annotations

import argparse
import contextlib
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

from ..exceptions import BuildError, CondaStoreError, NotFoundError
from ..schema import BuildArtifactType, BuildStatus
from .queue import (
    CANCELED_BY_USER,
    CONFIG_ENV,
    JOB_ID_ENV,
    MIGRATED_ENV,
    REDIS_URL_ENV,
    BuildQueue,
    cancel_key,
    compare_and_set,
    end_build,
    heartbeat_key,
    transition,
    work_dir,
)

if TYPE_CHECKING:
    from ..app import CondaStore
    from ..builder.records import BuildOutputs, BuildPaths

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

    overrides: dict[str, object] = {}
    if os.environ.get(REDIS_URL_ENV):
        overrides["redis_url"] = os.environ[REDIS_URL_ENV]
    if os.environ.get(MIGRATED_ENV):
        overrides["upgrade_database"] = False
    return CondaStore.from_config_file(job_config_path(config_path) or None, **overrides)


def job_config_path(config_path: str | None) -> str | None:
    """The worker's own config file (``$CONDA_STORE_CONFIG``) if it has one, else the job's."""
    return os.environ.get(CONFIG_ENV) or config_path


def environment_link(store: "CondaStore", namespace: str, environment: str) -> Path:
    """``<store>/<namespace>/envs/<environment>`` (names re-validated: paths never come from raw strings)."""
    from ..naming import validate_name

    return store.store_path / validate_name(namespace, "namespace") / "envs" / validate_name(environment, "environment")


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

    from ..orm import utcnow

    store = load_store(config_path)
    job = get_current_job()
    beat(store, build_id)  # before the claim, so the reconciler never sees BUILDING without a heartbeat
    values: dict[str, object] = {"status": BuildStatus.BUILDING, "started_on": utcnow()}
    # Only the build's current attempt may claim it: a job of an attempt the reconciler has
    # replaced (Redis kept it, or a worker took it twice) must not run the build again.
    expected_job_id = job.id if job is not None else None
    if not transition(store, build_id, (BuildStatus.QUEUED,), expected_job_id=expected_job_id, **values):
        log.info("build %s is no longer QUEUED as job %s (canceled or handled elsewhere); skipping",
                 build_id, expected_job_id)
        if _is_current_attempt(store, build_id, expected_job_id):
            store.redis.delete(heartbeat_key(build_id))
        return
    try:
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
    cmd = [sys.executable, "-m", "conda_store_jupyter.worker.tasks", "run-build", str(int(build_id))]
    path = job_config_path(config_path)
    if path:
        cmd += ["--config", path]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env[MIGRATED_ENV] = "1"  # this process has opened the database (claimed the build): schema is current
    if store.redis_url:
        env[REDIS_URL_ENV] = store.redis_url
    env.pop(JOB_ID_ENV, None)
    if job_id is not None:
        env[JOB_ID_ENV] = job_id
    parent = os.getppid()
    limit = store.build_time_limit
    deadline = time.monotonic() + limit if limit is not None else float("inf")
    next_beat = next_status = 0.0
    committed_at: float | None = None  # monotonic time the child was first seen COMPLETED
    terminated = threading.Event()

    def on_sigterm(signum, frame) -> None:  # the worker's cold shutdown (or its watchdog)
        terminated.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm) if threading.current_thread() is threading.main_thread() \
        else None
    proc: subprocess.Popen | None = None
    try:
        with open(wd / "child.stderr", "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
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


def stop_process_group(proc: subprocess.Popen) -> int | None:
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
        end_abnormally(store, build_id, outcome.stopped, outcome.reason or "stopped")
    elif outcome.returncode != 0:
        rc = outcome.returncode
        how = f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with code {rc}"
        tail = ""
        err = work_dir(store, build_id) / "child.stderr"
        if err.exists():  # tracebacks may quote index URLs with credentials
            tail = redact_text(err.read_text(errors="replace")[-STDERR_TAIL:]).strip()
        reason = f"the build process {how}" + (f": {tail.splitlines()[-1]}" if tail else "")
        end_abnormally(store, build_id, BuildStatus.FAILED, reason, extra=tail)
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
    """The tail of a COMPLETED build, idempotent: link switched, live log ended, image queued.

    The child runs it right after its commit; the supervisor runs it again after the child ended,
    in case the child was killed or crashed between the commit and the end of the tail.
    """
    from .. import orm
    from .logs import finish_log, log_finished

    with store.session() as db:
        environment_id = db.get(orm.Build, int(build_id)).environment_id
    # Link first, then end the live log: whoever follows the log until "finished" (conda-store
    # wait) finds the environment link already switched.
    sync_environment_link(store, environment_id)
    with contextlib.suppress(Exception):
        if not log_finished(store, build_id):
            finish_log(store, build_id, BuildStatus.COMPLETED)
    # Image hook: the image job (worker/images.py) runs on the artifacts queue, after COMPLETED,
    # so a slow image never delays the environment and a failed one never fails the build.
    if BuildArtifactType.DOCKER_MANIFEST.value in store.build_artifacts:
        try:
            BuildQueue(store).enqueue_image_once(build_id)
        except Exception as exc:  # noqa: BLE001 - the build is done; the image can be re-queued
            log.warning("build %s: could not queue its image job: %s", build_id, exc)


def end_abnormally(store: "CondaStore", build_id: int, status: BuildStatus, reason: str, extra: str = "") -> bool:
    """BUILDING -> ``status`` with ``reason``; remove the half-built prefix; store the log.

    The log is the child's log file (same host), else what reached the live stream, with the reason
    first (like ``BuildLog.fail``) and last (for readers following the stream).
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
    header = f"BUILD {status.value}: {reason}"
    logfile = work_dir(store, build_id) / "build.log"
    body = logfile.read_text(errors="replace") if logfile.exists() else "".join(
        f"{line}\n" for line in live_lines(store, build_id))
    text = f"{header}\n\n{body}" + (f"{extra}\n" if extra else "") + f"{header}\n"
    return end_build(store, build_id, (BuildStatus.BUILDING,), status, reason, text, announce=header)


# -- the build child ----------------------------------------------------------------------------
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
    from ..builder.pipeline import run_pipeline, settings_from_store
    from ..builder.records import BuildPaths
    from .logs import publish_line

    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        if build is None:
            raise NotFoundError(f"build {build_id} does not exist")
        spec_data = dict(build.specification.spec)
        build_key = build.build_key
        prefix = build.prefix_path(store.store_path)
    wd = work_dir(store, build_id)
    paths = BuildPaths(prefix=prefix, lockfile=wd / "conda-lock.yml", yaml=wd / "environment.yaml",
                       archive=wd / "environment.tar.gz", log=wd / "build.log")
    prefix.parent.mkdir(parents=True, exist_ok=True)

    def sink(line: str) -> None:
        publish_line(store, build_id, line)

    with BuildLog(paths.log, sink=sink) as blog:
        blog.write(f"build {build_id} ({build_key}) on {socket.gethostname()} pid {os.getpid()}")
        try:
            spec = load_specification(spec_data)
            outputs = run_pipeline(spec, settings_from_store(store, spec), paths, blog)
            with blog.stage("store artifacts"):
                keys = _store_artifacts(store, build_key, outputs)
        except CondaStoreError as err:  # BuildError from the pipeline, storage errors, bad spec
            if not isinstance(err, BuildError) or blog.failure is None:
                blog.fail(" ".join(str(err).split()))
            blog.close()
            _record_failure(store, build_id, build_key, paths, blog.failure or str(err))
            return BuildStatus.FAILED
        blog.write(f"BUILD COMPLETED in {sum(t.seconds for t in blog.timings):.1f} s")
    return _record_success(store, build_id, build_key, outputs, paths, keys)


def _store_artifacts(store: "CondaStore", build_key: str, outputs: "BuildOutputs") -> dict[BuildArtifactType, str]:
    from ..exceptions import ArtifactError
    from ..storage.base import artifact_key

    files = {BuildArtifactType.LOCKFILE: (outputs.lockfile, "text/yaml"),
             BuildArtifactType.YAML: (outputs.yaml, "text/yaml")}
    if outputs.archive is not None:
        files[BuildArtifactType.CONDA_PACK] = (outputs.archive, "application/gzip")
    keys = {}
    for kind, (path, content_type) in files.items():
        key = artifact_key(kind, build_key)
        try:
            store.storage.put_file(key, path, content_type=content_type)
        except Exception as exc:  # noqa: BLE001 - any storage failure fails the build with its reason
            raise ArtifactError(f"storing the {kind.value} artifact failed: {type(exc).__name__}: {exc}") from exc
        keys[kind] = key
    return keys


def _put_log(store: "CondaStore", build_key: str, path: Path) -> str:
    from ..storage.base import artifact_key

    key = artifact_key(BuildArtifactType.LOGS, build_key)
    store.storage.put_file(key, path, content_type="text/plain; charset=utf-8")
    return key


def _record_failure(store: "CondaStore", build_id: int, build_key: str, paths: "BuildPaths", reason: str) -> None:
    """FAILED with the reason, the log and (if the solve got that far) the lockfile, atomically."""

    from .. import orm
    from ..orm import utcnow
    from ..storage.base import artifact_key
    from .logs import finish_log

    with store.session() as db:
        if not compare_and_set(db, build_id, (BuildStatus.BUILDING,), expected_job_id=os.environ.get(JOB_ID_ENV),
                               status=BuildStatus.FAILED,
                               status_info=reason, ended_on=utcnow()):
            return  # canceled or reconciled meanwhile
        rows = {BuildArtifactType.LOGS: _put_log(store, build_key, paths.log)}
        if paths.lockfile.exists():
            rows[BuildArtifactType.LOCKFILE] = artifact_key(BuildArtifactType.LOCKFILE, build_key)
            store.storage.put_file(rows[BuildArtifactType.LOCKFILE], paths.lockfile, content_type="text/yaml")
        for kind, key in rows.items():
            db.add(orm.BuildArtifact(build_id=int(build_id), artifact_type=kind, key=key))
    with contextlib.suppress(Exception):
        finish_log(store, build_id, BuildStatus.FAILED)


def _record_success(store: "CondaStore", build_id: int, build_key: str, outputs: "BuildOutputs",
                    paths: "BuildPaths", keys: dict[BuildArtifactType, str]) -> BuildStatus:
    """One transaction: BUILDING -> COMPLETED, packages, artifact rows, size, current build.

    The LOGS artifact is stored only after winning the compare-and-set: a build that was canceled
    or reconciled meanwhile must not overwrite the log its final state was recorded with. The
    loser removes what only it would have used: its prefix and the artifacts it stored.
    """
    from sqlalchemy import or_, update

    from .. import orm
    from ..builder.record import record_packages
    from ..orm import utcnow

    with store.session() as db:
        claimed = compare_and_set(db, build_id, (BuildStatus.BUILDING,), expected_job_id=os.environ.get(JOB_ID_ENV),
                                  status=BuildStatus.COMPLETED,
                                  ended_on=utcnow(), status_info=None, size=outputs.size_bytes)
        if claimed:  # same transaction: COMPLETED is never visible without its log and packages
            keys = {**keys, BuildArtifactType.LOGS: _put_log(store, build_key, paths.log),
                    BuildArtifactType.DIRECTORY: str(outputs.prefix)}
            build = db.get(orm.Build, int(build_id))
            record_packages(db, build, outputs.packages)
            for kind, key in keys.items():
                db.add(orm.BuildArtifact(build_id=build.id, artifact_type=kind, key=key))
            # Newer builds win: a slow old build finishing late must not replace a newer current build.
            db.execute(
                update(orm.Environment)
                .where(orm.Environment.id == build.environment_id, orm.Environment.deleted_on.is_(None),
                       or_(orm.Environment.current_build_id.is_(None),
                           orm.Environment.current_build_id < build.id))
                .values(current_build_id=build.id)
                .execution_options(synchronize_session=False)
            )
    if not claimed:  # canceled or reconciled meanwhile: the other side owns the final state
        if not _is_current_attempt(store, build_id, os.environ.get(JOB_ID_ENV)):
            # A newer attempt of this build runs now, into the same prefix and artifact keys.
            log.warning("build %s ended elsewhere (a newer attempt runs it); leaving its files", build_id)
            return BuildStatus.FAILED
        log.warning("build %s ended elsewhere before it could complete; discarding its results", build_id)
        shutil.rmtree(outputs.prefix, ignore_errors=True)
        for key in keys.values():
            with contextlib.suppress(Exception):  # a key that is not ours (ValueError) is never touched
                store.storage.delete(key)
        return BuildStatus.FAILED
    finish_completed(store, build_id)
    return BuildStatus.COMPLETED


def sync_environment_link(store: "CondaStore", environment_id: int) -> Path | None:
    """Point ``<store>/<ns>/envs/<name>`` at the environment's current build (or remove it).

    Reads the current build and switches the link under an exclusive file lock, so two builds of
    one environment finishing together cannot leave the link at the older one.
    """
    import fcntl

    from .. import orm
    from ..builder.link import remove_environment_link, switch_environment_link

    with store.session() as db:
        env = db.get(orm.Environment, int(environment_id))
        if env is None:
            raise NotFoundError(f"environment {environment_id} does not exist")
        link = environment_link(store, env.namespace.name, env.name)
    link.parent.mkdir(parents=True, exist_ok=True)
    with open(link.parent / f".{link.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with store.session() as db:
            env = db.get(orm.Environment, int(environment_id))
            current = env.current_build
            usable = (env.deleted_on is None and current is not None and current.status == BuildStatus.COMPLETED
                      and current.deleted_on is None)
            target = current.prefix_path(store.store_path) if usable else None
        if target is not None and target.is_dir():
            return switch_environment_link(link, target)
        remove_environment_link(link)
        return None


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

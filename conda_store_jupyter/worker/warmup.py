"""Warm the zygote's SQL statement cache, so forked builds do not compile their SQL again.

SQLAlchemy compiles every distinct statement once per engine and caches the result on the
engine. A build child is forked from the worker and uses the worker's engine (``zygote.adopt``),
but it dies after its build, so whatever it compiled is lost: every build compiled the ~30
statements of its bookkeeping (claim, the final commit with its packages and artifact rows,
relationship loads) again, about as long as the solve and the install together.

:func:`warm_statement_cache` runs that bookkeeping once in the worker at start-up: a throwaway
build goes through ``claim`` and ``complete`` (with one package) inside one transaction that is
rolled back, so nothing of it is ever visible or kept. Its rows have negative ids (no sequence
value is used: the next real build id stays the next), its uploads go to a temporary directory,
and it never touches the filesystem of the store or Redis. Best effort: a failure only costs the
speed-up, and is logged.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..app import CondaStore

log = logging.getLogger(__name__)

WARMUP_ID = -1
"""Id of every throwaway row (never a real id: those start at 1)."""


def warm_statement_cache(store: "CondaStore") -> float | None:
    """Run a throwaway build's bookkeeping in a rolled-back transaction; the seconds it took, or
    None if it failed (logged; the worker works the same, its builds just compile their SQL)."""
    from sqlalchemy.orm import sessionmaker

    from ..storage.local import LocalStorage

    start = time.perf_counter()
    engine = store.engine
    saved = store._session_factory, store._storage
    try:
        with engine.connect() as conn, tempfile.TemporaryDirectory(prefix="csj-warmup-") as tmp:
            outer = conn.begin()
            try:
                _begin_for_real(conn)
                # Every session of the store joins this transaction; their commits end savepoints.
                store._session_factory = sessionmaker(bind=conn, expire_on_commit=False,
                                                      join_transaction_mode="create_savepoint")
                # Local files in the temporary directory whatever the store uses (S3 included), and
                # no configuration applied to them: nothing may reach the real artifacts.
                store._storage = LocalStorage(storage_directory=str(Path(tmp) / "storage"))
                _throwaway_build(store, Path(tmp))
            finally:
                outer.rollback()
    except Exception as exc:  # noqa: BLE001 - best effort, see the module docstring
        log.warning("could not warm the SQL statement cache (builds still work): %s: %s", type(exc).__name__, exc)
        return None
    finally:
        store._session_factory, store._storage = saved
    return time.perf_counter() - start


def _begin_for_real(conn) -> None:
    """Make the outer transaction a real one before any savepoint. sqlite3 (legacy transaction
    control) sends BEGIN only before its first DML statement; a SAVEPOINT sent first would start
    the transaction itself, and releasing it would commit the throwaway rows."""
    from sqlalchemy import text

    conn.execute(text("UPDATE build SET status_info = status_info WHERE id = :id"), {"id": WARMUP_ID})
    dbapi = conn.connection.dbapi_connection
    if getattr(dbapi, "in_transaction", True) is not True:
        raise RuntimeError("the database connection did not open a transaction")


def _throwaway_build(store: "CondaStore", tmp: Path) -> None:
    from .. import orm
    from ..builder.records import InstalledPackage
    from ..schema import BuildArtifactType, BuildStatus
    from . import lifecycle
    from .tasks import build_status

    name, job = "csj-warmup", "csj-warmup"
    with store.session() as db:
        namespace = orm.Namespace(id=WARMUP_ID, name=f"{name}-{WARMUP_ID}")
        environment = orm.Environment(id=WARMUP_ID, namespace=namespace, name=name)
        spec = orm.Specification(id=WARMUP_ID, name=name, spec={"name": name, "dependencies": []},
                                 sha256="0" * 64)
        db.add(orm.Build(id=WARMUP_ID, specification=spec, environment=environment, status=BuildStatus.QUEUED,
                         job_id=job))
    # What the supervisor and the child read and write, in the same calls they make (a job's
    # attempt id included: it is part of the statements).
    lifecycle.claim(store, WARMUP_ID, job_id=job)
    build_status(store, WARMUP_ID, job)
    build_status(store, WARMUP_ID)
    with store.session() as db:  # run_build / start_log: the build and its relationships
        build = db.get(orm.Build, WARMUP_ID)
        _ = dict(build.specification.spec), build.build_key, build.prefix_path(store.store_path)
    logfile = tmp / "build.log"
    logfile.write_text("warm-up\n")
    package = InstalledPackage(name=name, version="0", build="0", build_number=0, channel=f"file:///{name}",
                               subdir="noarch", url=f"file:///{name}/noarch/{name}-0-0.conda", fn=f"{name}-0-0.conda")
    result = lifecycle.BuildResult(prefix=tmp / "prefix", size_bytes=0, log=logfile,
                                   artifacts={BuildArtifactType.YAML: "unused"}, packages=[package])
    if not lifecycle.complete(store, WARMUP_ID, result, job_id=job):
        raise RuntimeError("the throwaway build did not complete")
    with store.session() as db:  # finish_completed
        _ = db.get(orm.Build, WARMUP_ID).environment_id
    lifecycle.image_queued(store, WARMUP_ID)

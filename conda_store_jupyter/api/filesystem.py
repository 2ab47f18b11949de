"""Environments from files: ``filesystem_namespace`` follows the files under ``watch_paths``.

Teams keep their environment files in git and point the service at a checkout. Each
``*.yaml``/``*.yml`` file (subdirectories included, hidden files and directories skipped) is one
environment, named by its ``name:``:

* a new file, or a file whose specification changed, builds its environment. "Changed" means the
  validated specification's sha256 differs from the one last built from it (recorded in the
  ``keyvaluestore`` under the prefix ``filesystem``, key = environment name), so touching a file,
  reformatting it or re-checking it out builds nothing;
* a removed file deletes its environment the way ``DELETE /api/v1/environment/…`` does (upstream
  only ever adds): the environment and its builds are soft-deleted, the prefixes removed, and the
  logs, lockfiles and YAML exports kept (``CondaStore.build_artifacts_kept_on_deletion``). When a
  whole watched directory disappears (an unmounted network share) nothing is deleted;
* an invalid file (bad YAML, a channel the settings do not allow, two files with one name) is
  logged with the exact problem, once per version of the file, and the others carry on; the
  environment last built from it stays as it was;
* an environment of the namespace deleted through the API while its file is still there is
  built again: the files are the source of truth;
* the settings of the namespace (``PUT /api/v1/setting/filesystem/...``) apply as for any
  submission: when they change, every file is read again, and the environments whose
  specification they change are rebuilt.

:class:`FilesystemSync` keeps, per file, its stat signature (mtime, ctime, size, inode) and what it
parsed to, so one :meth:`FilesystemSync.sync` costs a directory listing and a ``stat`` per file
(fine on network filesystems) and reads only the files that changed. Who runs it, and how only
one process does, is ``server/filesystem_watch.py``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from .. import orm
from ..app import CondaStore
from ..exceptions import CondaStoreError, NotFoundError
from ..schema import Specification, parse_specification
from .builds import submit
from .environments import delete_environment, get_environment, prepare_specification
from .settings import NamespaceSettings, namespace_settings

log = logging.getLogger(__name__)

RECORD_PREFIX = "filesystem"
"""``keyvaluestore`` prefix of the records: key = environment name, value = :class:`Record` fields."""

SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Record:
    """What was last built from a file: its path, the specification's sha256, the build."""

    path: str
    sha256: str
    build_id: int


@dataclass
class SyncReport:
    """What one :meth:`FilesystemSync.sync` did."""

    built: dict[str, int] = field(default_factory=dict)  # environment name -> new build id
    deleted: list[str] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)  # path -> problem (files that changed only)

    def __bool__(self) -> bool:
        return bool(self.built or self.deleted or self.invalid)


Signature = tuple[int, int, int, int]


class FilesystemSync:
    """Keeps the filesystem namespace in step with ``store.watch_paths``; see the module docstring."""

    def __init__(self, store: CondaStore) -> None:
        self.store = store
        self._signatures: dict[Path, Signature] = {}
        self._parsed: dict[Path, Specification | str] = {}  # a spec, or the problem with the file
        self._missing_roots: set[str] = set()  # logged once while missing
        self._duplicates: set[Path] = set()  # files skipped for naming another file's environment
        self._settings: str | None = None  # fingerprint of the settings the files were read under

    def forget(self) -> None:
        """Drop what was read (another process syncs now; its files may change meanwhile)."""
        self._signatures.clear()
        self._parsed.clear()
        self._settings = None

    # -- the directory -----------------------------------------------------------------------------
    def _scan(self) -> tuple[dict[Path, Signature], list[Path]]:
        """Every environment file with its stat signature, and the watched roots that are missing."""
        files: dict[Path, Signature] = {}
        missing: list[Path] = []
        for raw in self.store.watch_paths:
            root = Path(raw).expanduser().resolve()
            if not root.is_dir():
                missing.append(root)
                if str(root) not in self._missing_roots:
                    self._missing_roots.add(str(root))
                    log.warning("filesystem: watched directory %s does not exist (or is not readable)", root)
                continue
            self._missing_roots.discard(str(root))
            for top, dirs, names in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git and friends
                for name in names:
                    if name.startswith(".") or not name.endswith(SUFFIXES):
                        continue
                    path = Path(top) / name
                    try:
                        st = path.stat()
                    except OSError:  # removed between the listing and the stat
                        continue
                    files[path] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        return files, missing

    def _parse(self, path: Path, settings: NamespaceSettings) -> Specification | str:
        """The file's specification under its environment's settings, or the problem with it."""
        try:
            data = path.read_bytes()
            if len(data) > MAX_FILE_BYTES:
                return f"file is larger than {MAX_FILE_BYTES // 1024} KB"
            name = parse_specification(data).name  # whose settings apply
            return prepare_specification(self.store, data, settings.for_environment(name))
        except (OSError, CondaStoreError) as exc:
            return str(exc)

    def _read_changed(self, files: dict[Path, Signature], report: SyncReport) -> None:
        for path in set(self._signatures) - set(files):
            self._signatures.pop(path, None)
            self._parsed.pop(path, None)
        with self.store.session() as db:  # every environment's settings, in one query
            settings = namespace_settings(db, self.store, self.store.filesystem_namespace)
        if settings.fingerprint != self._settings:
            # The settings decide what a file means (channels, included packages): read them all
            # again, and rebuild those whose specification changed, as for an edited file.
            self._settings = settings.fingerprint
            self._signatures.clear()
        changed = [path for path, signature in files.items() if self._signatures.get(path) != signature]
        for path in changed:
            self._signatures[path] = files[path]
            parsed = self._parsed[path] = self._parse(path, settings)
            if isinstance(parsed, str):
                report.invalid[str(path)] = parsed
                log.error("filesystem: %s is not a valid environment file, skipped: %s", path, parsed)

    def _wanted(self, report: SyncReport, records: dict[str, Record]) -> dict[str, tuple[Path, Specification]]:
        """Environment name -> (file, specification). A second file naming the same environment
        is skipped and logged (once while it lasts): the file that defines it already keeps it,
        else the first path in sort order wins, so the choice is stable."""
        wanted: dict[str, tuple[Path, Specification]] = {}
        duplicates: set[Path] = set()
        owners = {Path(r.path) for r in records.values()}
        for path in sorted(self._parsed, key=lambda p: (p not in owners, p)):
            spec = self._parsed[path]
            if isinstance(spec, str):
                continue
            if spec.name in wanted:
                duplicates.add(path)
                if path not in self._duplicates:
                    problem = f"environment {spec.name!r} is already defined by {wanted[spec.name][0]}"
                    report.invalid[str(path)] = problem
                    log.error("filesystem: %s skipped: %s", path, problem)
                continue
            wanted[spec.name] = (path, spec)
        self._duplicates = duplicates
        return wanted

    # -- the database ------------------------------------------------------------------------------
    def _records(self) -> tuple[dict[str, Record], set[str]]:
        namespace = self.store.filesystem_namespace
        with self.store.session() as db:
            rows = db.execute(select(orm.KeyValue.key, orm.KeyValue.value)
                              .where(orm.KeyValue.prefix == RECORD_PREFIX)).all()
            live = set(db.scalars(
                select(orm.Environment.name)
                .join(orm.Namespace, orm.Environment.namespace_id == orm.Namespace.id)
                .where(orm.Namespace.name == namespace, orm.Namespace.deleted_on.is_(None),
                       orm.Environment.deleted_on.is_(None))))
        records = {}
        for key, value in rows:
            try:
                records[key] = Record(**value)
            except TypeError:  # a record of another shape: rebuild from the file
                continue
        return records, live

    def _save(self, name: str, record: Record | None) -> None:
        with self.store.session() as db:
            row = db.scalar(select(orm.KeyValue).where(orm.KeyValue.prefix == RECORD_PREFIX,
                                                       orm.KeyValue.key == name))
            if record is None:
                if row is not None:
                    db.delete(row)
            elif row is None:
                db.add(orm.KeyValue(prefix=RECORD_PREFIX, key=name, value=record.__dict__))
            else:
                row.value = dict(record.__dict__)

    def _delete(self, name: str) -> None:
        from ..worker.queue import BuildQueue

        namespace = self.store.filesystem_namespace
        with self.store.session() as db:
            try:
                env = get_environment(db, namespace, name)
            except NotFoundError:
                env = None
            if env is not None:
                delete_environment(db, env)
                env_id = env.id
        if env is not None:
            BuildQueue(self.store).enqueue_delete_environment(env_id)

    # -- one pass ----------------------------------------------------------------------------------
    def sync(self) -> SyncReport:
        """Build what is new or changed, delete what was removed; see the module docstring."""
        report = SyncReport()
        files, missing_roots = self._scan()
        self._read_changed(files, report)
        records, live = self._records()
        wanted = self._wanted(report, records)
        namespace = self.store.filesystem_namespace
        for name, (path, spec) in wanted.items():
            record = records.get(name)
            if record is not None and record.sha256 == spec.sha256 and name in live:
                if record.path != str(path):  # moved, same content: follow the file, build nothing
                    self._save(name, Record(str(path), record.sha256, record.build_id))
                continue
            try:
                build_id = submit(self.store, namespace=namespace, specification=spec)
            except CondaStoreError as exc:
                log.error("filesystem: %s: could not submit %s/%s: %s", path, namespace, name, exc)
                continue
            self._save(name, Record(str(path), spec.sha256, build_id))
            report.built[name] = build_id
            log.info("filesystem: %s: %s %s/%s, build %d", path, "rebuilt" if record else "built",
                     namespace, name, build_id)
        for name, record in records.items():
            if name in wanted:
                continue
            path = Path(record.path)
            if isinstance(self._parsed.get(path), str):
                continue  # the file is still there but invalid now: keep what was last built
            if any(root in path.parents for root in missing_roots):
                continue  # its whole directory is gone (an unmounted share?): delete nothing
            self._delete(name)
            self._save(name, None)
            report.deleted.append(name)
            log.info("filesystem: %s no longer defines %s/%s: deleted it", path, namespace, name)
        return report

"""SQLAlchemy 2 models. The database is the source of truth for build state.

Soft deletion (``deleted_on``) keeps history and the artifacts named in
``CondaStore.build_artifacts_kept_on_deletion`` after a user deletes something; listings filter it.
Schema changes go through alembic revisions in ``migrations/versions`` (one concern each);
:func:`upgrade` applies them on start-up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .naming import build_key
from .schema import ArtifactStatus, BuildArtifactType, BuildStatus
from .storage.base import artifact_key

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def build_prefix_path(store_path: Path, namespace_id: int, key: str) -> Path:
    """``<store>/builds/<namespace id>/<build key>``: made from ids and hashes, never raw strings."""
    return store_path / "builds" / str(namespace_id) / key


def utcnow() -> dt.datetime:
    """Naive UTC, as upstream's API emits (``2026-11-21T04:38:54.465745``)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Namespace(Base):
    __tablename__ = "namespace"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    # The identity whose primary namespace this is (None for shared namespaces): two user names
    # may normalise alike, and one user must never be handed another's namespace.
    owner: Mapped[Optional[str]] = mapped_column(String(255), index=True)
    metadata_: Mapped[Optional[dict[str, Any]]] = mapped_column("metadata", JSON, default=dict)
    deleted_on: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)

    environments: Mapped[list["Environment"]] = relationship(back_populates="namespace")
    role_mappings: Mapped[list["NamespaceRoleMapping"]] = relationship(
        back_populates="namespace", cascade="all, delete-orphan"
    )


class NamespaceRoleMapping(Base):
    """Grants ``role`` to every identity matching the ARN glob ``entity`` inside this namespace."""

    __tablename__ = "namespace_role_mapping"

    id: Mapped[int] = mapped_column(primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespace.id", ondelete="CASCADE"))
    entity: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))

    namespace: Mapped[Namespace] = relationship(back_populates="role_mappings")


class Specification(Base):
    """A normalised environment.yaml, shared by every build made from identical text."""

    __tablename__ = "specification"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_on: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # True: ``spec`` is ``{"name", "description", "lockfile": <conda-lock v1>}`` (lockspec.py), built
    # by installing exactly the lock; False: a normalised environment.yaml, solved by the build.
    is_lockfile: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Environment(Base):
    __tablename__ = "environment"
    __table_args__ = (UniqueConstraint("namespace_id", "name", name="uq_environment_namespace_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespace.id"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[Optional[str]] = mapped_column(Text)
    current_build_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("build.id", use_alter=True, name="fk_environment_current_build", ondelete="SET NULL")
    )
    deleted_on: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)

    namespace: Mapped[Namespace] = relationship(back_populates="environments")
    current_build: Mapped[Optional["Build"]] = relationship(foreign_keys=[current_build_id], post_update=True)
    builds: Mapped[list["Build"]] = relationship(
        back_populates="environment", foreign_keys="Build.environment_id", order_by="Build.id"
    )


build_conda_package_build = Table(
    "build_conda_package_build",
    Base.metadata,
    Column("build_id", ForeignKey("build.id", ondelete="CASCADE"), primary_key=True),
    Column("conda_package_build_id", ForeignKey("conda_package_build.id", ondelete="CASCADE"), primary_key=True),
)


class Build(Base):
    __tablename__ = "build"

    id: Mapped[int] = mapped_column(primary_key=True)
    specification_id: Mapped[int] = mapped_column(ForeignKey("specification.id"))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environment.id"), index=True)
    status: Mapped[BuildStatus] = mapped_column(
        Enum(BuildStatus, name="build_status", native_enum=False, length=16), default=BuildStatus.QUEUED,
        index=True,
    )
    status_info: Mapped[Optional[str]] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    scheduled_on: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_on: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    ended_on: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    deleted_on: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    job_id: Mapped[Optional[str]] = mapped_column(String(64))
    specification: Mapped[Specification] = relationship()
    environment: Mapped[Environment] = relationship(back_populates="builds", foreign_keys=[environment_id])
    artifacts: Mapped[list["BuildArtifact"]] = relationship(back_populates="build", cascade="all, delete-orphan")
    package_builds: Mapped[list["CondaPackageBuild"]] = relationship(secondary=build_conda_package_build)

    @property
    def build_key(self) -> str:
        return build_key(self.specification.sha256, self.scheduled_on, self.id, self.environment.name)

    def prefix_path(self, store_path: Path) -> Path:
        return build_prefix_path(store_path, self.environment.namespace_id, self.build_key)

    def artifact(self, kind: BuildArtifactType) -> Optional["BuildArtifact"]:
        """The READY artifact ``kind`` (a row that may be downloaded), or None."""
        row = self.artifact_state(kind)
        return row if row is not None and row.status is ArtifactStatus.READY else None

    def artifact_state(self, kind: BuildArtifactType) -> Optional["BuildArtifact"]:
        """The row of artifact ``kind`` whatever its state (PENDING, READY, FAILED), or None."""
        return next((a for a in self.artifacts if a.artifact_type == kind), None)

    @property
    def image_status(self) -> Optional[ArtifactStatus]:
        """State of the image (the DOCKER_MANIFEST row); None when none was asked for. Kept for
        the API's ``image_status`` field, from before every artifact had its own state."""
        row = self.artifact_state(BuildArtifactType.DOCKER_MANIFEST)
        return row.status if row is not None else None

    def log_key(self) -> str:
        """Storage key of the build's log: the recorded one, else where the worker writes it."""
        row = self.artifact(BuildArtifactType.LOGS)
        return row.key if row is not None else artifact_key(BuildArtifactType.LOGS, self.build_key)


class BuildArtifact(Base):
    __tablename__ = "build_artifact"
    __table_args__ = (UniqueConstraint("build_id", "artifact_type", name="uq_build_artifact_type"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("build.id", ondelete="CASCADE"), index=True)
    artifact_type: Mapped[BuildArtifactType] = mapped_column(
        Enum(BuildArtifactType, name="build_artifact_type", native_enum=False, length=32)
    )
    key: Mapped[str] = mapped_column(String(1024))
    """Storage key (DIRECTORY: the prefix path); empty while the artifact is not READY."""
    # Made-after-COMPLETED artifacts (POST_BUILD_ARTIFACTS) have a row from the COMPLETED commit on:
    # PENDING until their job records READY or FAILED (see worker.lifecycle). Everything else is
    # READY when written. ``reason`` says why a FAILED one will not come.
    status: Mapped[ArtifactStatus] = mapped_column(
        Enum(ArtifactStatus, name="artifact_status", native_enum=False, length=16),
        default=ArtifactStatus.READY, server_default=ArtifactStatus.READY.value,
    )
    reason: Mapped[Optional[str]] = mapped_column(Text)

    build: Mapped[Build] = relationship(back_populates="artifacts")


class CondaChannel(Base):
    __tablename__ = "conda_channel"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(1024), unique=True)
    last_update: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)


class CondaPackage(Base):
    """A (channel, name, version); its builds per subdir live in CondaPackageBuild."""

    __tablename__ = "conda_package"
    __table_args__ = (UniqueConstraint("channel_id", "name", "version", name="uq_conda_package"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("conda_channel.id"))
    name: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[str] = mapped_column(String(255))
    license: Mapped[Optional[str]] = mapped_column(Text)
    summary: Mapped[Optional[str]] = mapped_column(Text)

    channel: Mapped[CondaChannel] = relationship()
    builds: Mapped[list["CondaPackageBuild"]] = relationship(back_populates="package")


class CondaPackageBuild(Base):
    __tablename__ = "conda_package_build"
    __table_args__ = (UniqueConstraint("package_id", "subdir", "build", name="uq_conda_package_build"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    package_id: Mapped[int] = mapped_column(ForeignKey("conda_package.id"))
    build: Mapped[str] = mapped_column(String(255))
    build_number: Mapped[int] = mapped_column(Integer, default=0)
    subdir: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[Optional[str]] = mapped_column(String(64))
    md5: Mapped[Optional[str]] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    depends: Mapped[list[Any]] = mapped_column(JSON, default=list)
    constrains: Mapped[list[Any]] = mapped_column(JSON, default=list)
    timestamp: Mapped[Optional[int]] = mapped_column(BigInteger)
    url: Mapped[Optional[str]] = mapped_column(Text)

    package: Mapped[CondaPackage] = relationship(back_populates="builds")


# -- engine -----------------------------------------------------------------------------------
def create_engine_for(url: str):
    """An engine with the per-dialect settings we rely on."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            # WAL: the server reads while workers write; foreign keys are off by default in SQLite.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = None
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine, revision: str = "head") -> None:
    """Apply alembic migrations up to ``revision`` (idempotent; safe with several processes)."""
    from alembic import command

    # Server and workers may start together: serialise migrations across processes. PostgreSQL
    # has advisory locks; SQLite only locks on the first write, after alembic has read the
    # (empty) version table, so two processes would both create the tables. Use a file lock.
    with contextlib.ExitStack() as stack:
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        if database and database != ":memory:":
            lock = stack.enter_context(open(f"{database}.migrate-lock", "w"))
            fcntl.flock(lock, fcntl.LOCK_EX)
        conn = stack.enter_context(engine.begin())
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7261001)")
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


class Token(Base):
    """An API token we issued. Only a salted hash is stored; ``prefix`` narrows the lookup.

    The plaintext is ``cst_<prefix><secret>`` and is shown once, at creation. Revocation sets
    ``revoked_on``; expiry is ``expires_at``. ``role_bindings`` never exceed the issuer's.
    """

    __tablename__ = "token"

    id: Mapped[int] = mapped_column(primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    hashed: Mapped[str] = mapped_column(String(255))
    username: Mapped[Optional[str]] = mapped_column(String(255))
    primary_namespace: Mapped[str] = mapped_column(String(255))
    role_bindings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[Optional[str]] = mapped_column(Text)
    created_on: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    last_used: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    revoked_on: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    issuer_id: Mapped[Optional[int]] = mapped_column(ForeignKey("token.id", ondelete="SET NULL"))
    # True: a down-scoped token; role_bindings are all it may do. False: a session-like token that
    # also gets its user's live grants (admin_users, namespace role mappings) at use time.
    scoped: Mapped[bool] = mapped_column(Boolean, default=False)


class KeyValue(Base):
    """A JSON value under ``(prefix, key)``: upstream's ``keyvaluestore``.

    Holds the settings overrides (prefixes ``setting``, ``setting/<ns>``, ``setting/<ns>/<env>``;
    see ``api.settings``) and what the filesystem watcher last built from each file (prefix
    ``filesystem``; see ``api.filesystem``).
    """

    __tablename__ = "keyvaluestore"
    __table_args__ = (UniqueConstraint("prefix", "key", name="uq_keyvaluestore_prefix_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prefix: Mapped[str] = mapped_column(String(512), index=True)
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[Any] = mapped_column(JSON, nullable=False)

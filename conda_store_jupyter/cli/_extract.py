"""Safe extraction of a conda-pack archive: nothing may be written or point outside the root.

Checking each link's target *textually* is not enough. With a directory symlink ``a -> d``,
a member ``a/x`` is really ``d/x``, and a target such as ``a/..`` lexically means ``.`` but
really means the parent of ``d``; chains of such links (plus the path-length bug in the stdlib's
``filter="data"``, CVE-2025-4517, present in Python 3.11.7) let an archive write anywhere.

So the archive is checked against its *own namespace*, the names it has created so far:

* no member (file, directory, link) may have a parent path that passes through a symlink
  member, and no name may be reused once a symlink owns it (writing to it would follow it);
* a symlink's target is resolved relative to the link's directory, component by component;
  it must stay inside the root and may not pass *through* another symlink (a later symlink
  that would sit in the middle of an earlier target is refused too). Its last component may
  be a symlink (``libz.so -> libz.so.1 -> libz.so.1.3`` is everywhere in conda packages): that
  link is held to the same rules, so the chain ends inside the root;
* a hardlink may only point at an earlier non-symlink member reached without symlinks.

Our checks run first, then ``filter="data"``; after extraction every member's real path is
verified to be inside the root (defence in depth) before anything from the archive is run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ._errors import CLIError


def _parts(name: str) -> list[str]:
    """The path components of a member name (``./`` and trailing slashes are not parts)."""
    return [p for p in name.split("/") if p not in ("", ".")]


class ArchiveNamespace:
    """The names an archive has created so far, and the rules a new member must satisfy."""

    def __init__(self) -> None:
        self.symlinks: set[str] = set()
        self.names: set[str] = set()  # every member and every implied parent directory
        self.link_through: set[str] = set()  # intermediate paths some symlink target traverses

    def _refuse(self, name: str, why: str) -> CLIError:
        return CLIError(f"unsafe archive: member {name!r} {why}")

    def _through_symlink(self, parts: list[str]) -> str | None:
        """The first proper prefix of ``parts`` that is a symlink member, if any."""
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in self.symlinks:
                return prefix
        return None

    def check(self, member) -> None:  # member: tarfile.TarInfo (tarfile is imported lazily)
        """Raise CLIError if ``member`` is unsafe given everything extracted before it."""
        name = member.name
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise self._refuse(name, "has an absolute path")
        if ".." in name.replace("\\", "/").split("/"):
            raise self._refuse(name, "contains '..'")
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise self._refuse(name, "is a device, fifo or other special file")
        parts = _parts(name)
        if not parts:
            if member.isdir():
                return  # "./": the root itself
            raise self._refuse(name, "has an empty name")
        key = "/".join(parts)
        via = self._through_symlink(parts)
        if via is not None:
            raise self._refuse(name, f"lies under the symlink {via!r}")
        if key in self.symlinks:
            raise self._refuse(name, "would replace (and write through) an earlier symlink")
        if member.issym():
            if key in self.names:
                raise self._refuse(name, "is a symlink replacing an earlier member")
            if key in self.link_through:
                raise self._refuse(name, "is a symlink in the middle of an earlier symlink's target")
            self._check_symlink_target(name, parts, member.linkname)
            self.symlinks.add(key)
        elif member.islnk():
            self._check_hardlink_target(name, member.linkname)
        for i in range(1, len(parts) + 1):
            self.names.add("/".join(parts[:i]))

    def _check_symlink_target(self, name: str, parts: list[str], target: str) -> None:
        if not target or target.startswith("/"):
            raise self._refuse(name, f"is a symlink to the absolute path {target!r}: it points outside the environment")
        stack = parts[:-1]  # targets are relative to the link's own directory
        through: list[str] = []
        for component in target.split("/"):
            if component in ("", "."):
                continue
            if component == ".." and not stack:
                raise self._refuse(name, f"is a symlink to {target!r}, which points outside the environment")
            if stack:  # the path so far is traversed: by the next name, or by ".." (its parent)
                prefix = "/".join(stack)
                if prefix in self.symlinks:
                    raise self._refuse(name, f"is a symlink to {target!r}, which passes through the symlink {prefix!r}")
                through.append(prefix)
            if component == "..":
                stack.pop()
            else:
                stack.append(component)
        # The final component may be a (checked) symlink; the traversed ones must never become
        # symlinks later either, or the target's real meaning would change after this check.
        self.link_through.update(through)

    def _check_hardlink_target(self, name: str, target: str) -> None:
        if not target or target.startswith("/"):
            raise self._refuse(name, f"is a hardlink to the absolute path {target!r}: it points outside the environment")
        if ".." in target.split("/"):
            raise self._refuse(name, f"is a hardlink to {target!r}, which points outside the environment")
        parts = _parts(target)
        key = "/".join(parts)
        via = self._through_symlink(parts)
        if via is not None:
            raise self._refuse(name, f"is a hardlink to {target!r} under the symlink {via!r}")
        if not parts or key not in self.names:
            raise self._refuse(name, f"is a hardlink to {target!r}, which is not an earlier member")
        if key in self.symlinks:
            raise self._refuse(name, f"is a hardlink to the symlink {target!r}")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _tree_inodes(root: str) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of everything physically under ``root`` (symlinks not followed)."""
    st = os.lstat(root)
    inodes = {(st.st_dev, st.st_ino)}
    # fwalk works relative to directory fds, so a tree deeper than PATH_MAX is still walked.
    for _dirpath, dirnames, filenames, dirfd in os.fwalk(root):
        for entry in (*dirnames, *filenames):
            st = os.stat(entry, dir_fd=dirfd, follow_symlinks=False)
            inodes.add((st.st_dev, st.st_ino))
    return inodes


def verify_extracted(dest: Path, names: list[str]) -> None:
    """Every member, and every symlink's target, must really be inside ``dest``.

    ``os.path.realpath`` is not enough on its own: on Python 3.11 it silently gives up on
    components longer than PATH_MAX (the same trick as CVE-2025-4517) and answers lexically.
    The kernel's own resolution cannot be fooled that way, so each member is ``stat``-ed
    (following links) and its inode must be one of those found by walking the tree without
    following links. A dangling symlink has no inode; its target is checked lexically.
    """
    root = os.path.realpath(dest)
    inodes = _tree_inodes(root)
    for name in names:
        path = os.path.join(root, *_parts(name))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            real = os.path.realpath(path)
            if os.path.islink(path) and _inside(real, root):
                continue
            raise CLIError(f"unsafe archive: member {name!r} resolves to {real!r}, outside the environment") from None
        except OSError as exc:  # ELOOP, ENAMETOOLONG, ...: nothing we can vouch for
            raise CLIError(f"unsafe archive: member {name!r} cannot be verified: {exc.strerror}") from None
        if (st.st_dev, st.st_ino) not in inodes:
            raise CLIError(f"unsafe archive: member {name!r} resolves to a file outside the environment")


def safe_extract(archive: Path, dest: Path) -> None:
    """Stream-extract a tar(.gz) into ``dest`` (which must exist and be empty), refusing unsafe members."""
    import tarfile

    namespace = ArchiveNamespace()
    names: list[str] = []

    def checked(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        for member in tar:
            namespace.check(member)
            names.append(member.name)
            yield member

    try:
        # "r|*": one sequential pass over the (possibly compressed) stream, nothing held in memory.
        with tarfile.open(archive, mode="r|*") as tar:
            tar.extractall(dest, members=checked(tar), filter="data")
    except tarfile.FilterError as exc:  # second line of defence: the stdlib's own refusal
        raise CLIError(f"unsafe archive: {exc}") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CLIError(f"cannot extract the environment archive {archive}: {exc}") from None
    verify_extracted(dest, names)

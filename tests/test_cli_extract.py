"""Extraction escapes through symlink chains (the reviewer's proof of concept and variants).

Per-member textual checks and Python 3.11.7's ``filter="data"`` (CVE-2025-4517) both let a chain
of directory symlinks place files outside the destination. These archives are built by hand;
each must be refused by *our* checks (matched by message), whatever the stdlib filter does.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from conda_store_jupyter.cli._errors import CLIError
from conda_store_jupyter.cli._extract import ArchiveNamespace, safe_extract
from conda_store_jupyter.cli._run import build_dir, find_cached, install_archive

from .archives import write_tar


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _tar(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"pwned\n") -> Path:
    return write_tar(path, members, payload, compress=False)


def poc_members() -> list[tarfile.TarInfo]:
    """/tmp/rvw/poc.py: 16 nested 247-char directories each shadowed by a one-letter symlink,
    a link back up through them, ``escape -> <that link>/..`` and ``escape/OUTSIDE.txt``."""
    comp, steps = "d" * 247, "abcdefghijklmnop"
    members, path = [], ""
    for s in steps:
        members.append(_member(os.path.join(path, comp), tarfile.DIRTYPE))
        members.append(_member(os.path.join(path, s), tarfile.SYMTYPE, comp))
        path = os.path.join(path, comp)
    linkpath = os.path.join(*steps, "l" * 254)
    members.append(_member(linkpath, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps))))
    members.append(_member("escape", tarfile.SYMTYPE, linkpath + "/.."))
    members.append(_member("escape/OUTSIDE.txt"))
    return members


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "a" / "dest"
    d.mkdir(parents=True)
    return d


def _escaped(dest: Path) -> list[Path]:
    """Anything written next to or above the destination."""
    return [p for p in dest.parent.parent.rglob("*") if dest not in p.parents and p != dest and p.name != "a"
            and not p.name.endswith(".tar")]


def test_poc_symlink_chain_escape_is_refused(tmp_path, dest):
    archive = _tar(tmp_path / "evil.tar", poc_members())
    with pytest.raises(CLIError, match=r"unsafe archive: member 'a/b/c/[^']*' lies under the symlink 'a'"):
        safe_extract(archive, dest)
    assert not (dest.parent / "OUTSIDE.txt").exists() and _escaped(dest) == []


VARIANTS = {
    "hardlink through a symlink dir": (
        [_member("real", tarfile.DIRTYPE), _member("real/f"), _member("s", tarfile.SYMTYPE, "real"),
         _member("h", tarfile.LNKTYPE, "s/f")],
        "is a hardlink to 's/f' under the symlink 's'",
    ),
    "hardlink to a symlink": (
        [_member("s", tarfile.SYMTYPE, "."), _member("h", tarfile.LNKTYPE, "s")],
        "is a hardlink to the symlink 's'",
    ),
    "absolute symlink then a file through it": (
        [_member("s", tarfile.SYMTYPE, str(Path("/tmp").resolve())), _member("s/evil")],
        "is a symlink to the absolute path",
    ),
    "symlink through a symlink": (
        # d/e/up -> ../.. is the root, so up/.. is *outside* although it reads as d/e.
        [_member("d/e", tarfile.DIRTYPE), _member("d/e/up", tarfile.SYMTYPE, "../.."),
         _member("x", tarfile.SYMTYPE, "d/e/up/.."), _member("x/evil")],
        "is a symlink to 'd/e/up/..', which passes through the symlink 'd/e/up'",
    ),
    "symlink defined after a target that traverses it": (
        [_member("d/e", tarfile.DIRTYPE), _member("x", tarfile.SYMTYPE, "d/e/up/.."),
         _member("d/e/up", tarfile.SYMTYPE, "../..")],
        "is a symlink in the middle of an earlier symlink's target",
    ),
    "file replacing a symlink": (
        [_member("lib", tarfile.DIRTYPE), _member("lib/s", tarfile.SYMTYPE, "../lib"), _member("lib/s")],
        "would replace (and write through) an earlier symlink",
    ),
    "directory under a symlink": (
        [_member("s", tarfile.SYMTYPE, "."), _member("s/sub", tarfile.DIRTYPE)],
        "lies under the symlink 's'",
    ),
}


@pytest.mark.parametrize("case", sorted(VARIANTS))
def test_symlink_variants_are_refused_by_our_checks(case, tmp_path, dest):
    members, needle = VARIANTS[case]
    archive = _tar(tmp_path / "v.tar", members)
    with pytest.raises(CLIError) as err:
        safe_extract(archive, dest)
    assert str(err.value).startswith("unsafe archive") and needle in str(err.value), str(err.value)
    assert _escaped(dest) == []


def test_conda_style_symlink_chains_still_extract(tmp_path, dest):
    members = [
        _member("lib", tarfile.DIRTYPE),
        _member("lib/libz.so.1.3"),
        _member("lib/libz.so.1", tarfile.SYMTYPE, "libz.so.1.3"),
        _member("lib/libz.so", tarfile.SYMTYPE, "libz.so.1"),  # a link to a link
        _member("lib/python3.11/site.py"),
        _member("lib/python3.1", tarfile.SYMTYPE, "python3.11"),
        _member("bin/python", tarfile.SYMTYPE, "../lib/libz.so"),
        _member("bin/hard", tarfile.LNKTYPE, "lib/libz.so.1.3"),
        _member("./share/"[:-1], tarfile.DIRTYPE),
    ]
    safe_extract(_tar(tmp_path / "ok.tar", members), dest)
    assert (dest / "bin" / "python").read_bytes() == b"pwned\n"
    assert (dest / "lib" / "python3.1" / "site.py").exists()


def test_realpath_check_after_extraction_catches_what_slips_through(tmp_path, dest, monkeypatch):
    """Defence in depth: with our member checks disabled, the PoC gets past ``filter="data"``
    on this Python, and the post-extraction realpath check still stops the install before
    conda-unpack (which would run code from the archive) ever starts."""
    monkeypatch.setattr(ArchiveNamespace, "check", lambda self, member: None)
    members = [*poc_members(), _member("bin/conda-unpack")]
    archive = _tar(tmp_path / "evil.tar", members, payload=b"#!/bin/sh\ntouch RAN\n")
    directory = build_dir("srv", 3, tmp_path / "cache")
    directory.mkdir(parents=True)
    try:
        with pytest.raises(CLIError, match="unsafe archive: .*outside the environment"):
            install_archive(archive, "ab" * 32, 3, directory)
    finally:
        for stray in tmp_path.rglob("OUTSIDE.txt"):
            stray.unlink()
    assert find_cached("srv", 3, tmp_path / "cache") is None and not list(tmp_path.rglob("RAN"))


def test_namespace_rules_directly():
    ns = ArchiveNamespace()
    ns.check(_member("d/e", tarfile.DIRTYPE))
    ns.check(_member("d/e/up", tarfile.SYMTYPE, "../.."))
    ns.check(_member("d/alias", tarfile.SYMTYPE, "e/up"))  # ends at a symlink: allowed
    with pytest.raises(CLIError, match="points outside"):
        ns.check(_member("d/e/out", tarfile.SYMTYPE, "../../.."))
    with pytest.raises(CLIError, match="symlink replacing an earlier member"):
        ns.check(_member("d/e", tarfile.SYMTYPE, "."))

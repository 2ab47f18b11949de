"""Low-level pieces of the image builder: reproducible tar streams and deterministic parallel gzip.

Kept apart from :mod:`.image` (which decides *what* goes into which layer) because these two
functions carry the reproducibility contract: the same entries must always give the same bytes,
on any run, so that equal packages in different environments give equal layer digests.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import tarfile
import zlib
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

# Docker image manifest v2 schema 2 media types (what `docker pull` negotiates first).
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# OCI equivalents, for image layouts on disk (umoci and skopeo's oci: transport want these).
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYERS = {LAYER_TAR_GZIP: "application/vnd.oci.image.layer.v1.tar+gzip"}

FIXED_MTIME = 315532800
"""1980-01-01T00:00:00Z for every tar entry. Not 0: tools that zip files from the image (building a
wheel from an sdist, for example) refuse timestamps before 1980."""

FIXED_CREATED = "1980-01-01T00:00:00Z"
"""``created`` of config and history, constant so the config digest depends only on the content."""

GZIP_BLOCK = 1 << 20
"""Independent deflate blocks of exactly this many uncompressed bytes (cut at fixed stream offsets,
so the output never depends on thread timing)."""

_WINDOW = 32 * 1024  # deflate window: each block is primed with the previous block's last 32 KiB
_READ = 1 << 20
_TAR_RECORD = tarfile.RECORDSIZE  # 10240, what GNU tar and tarfile pad archives to


def canonical_json(obj) -> bytes:
    """The one serialisation of every JSON blob we hash: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class TarEntry:
    """One normalised tar member. ``source`` is read only for regular files."""

    name: str  # path inside the image, relative, no leading "/" (e.g. "opt/conda/bin/python")
    kind: bytes  # tarfile.DIRTYPE | REGTYPE | SYMTYPE
    mode: int
    size: int = 0
    linkname: str = ""
    source: str = ""


def entry_for(path: Path, name: str) -> TarEntry | None:
    """Normalised entry for ``path`` (lstat, symlinks not followed); None for sockets/devices/fifos.

    Only the executable bit survives from the real mode: the rest (umask of whoever installed the
    package, hardlink counts, owners, times) would otherwise leak host details into the digest.
    Hardlinks are not reproduced either: whether two files share an inode depends on how the
    environment was installed (package cache on the same filesystem or not), not on its content.
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return TarEntry(name, tarfile.SYMTYPE, 0o777, linkname=os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return TarEntry(name, tarfile.DIRTYPE, 0o755)
    if stat.S_ISREG(st.st_mode):
        mode = 0o755 if st.st_mode & 0o111 else 0o644
        return TarEntry(name, tarfile.REGTYPE, mode, size=st.st_size, source=str(path))
    return None


def dir_entry(name: str) -> TarEntry:
    return TarEntry(name, tarfile.DIRTYPE, 0o755)


def sort_key(entry: TarEntry) -> tuple[str, ...]:
    """Component-wise order: a directory's children follow it directly (``a/b`` before ``a-b``)."""
    return tuple(entry.name.split("/"))


def _header(entry: TarEntry) -> bytes:
    info = tarfile.TarInfo(entry.name)
    info.type = entry.kind
    info.mode = entry.mode
    info.size = entry.size if entry.kind == tarfile.REGTYPE else 0
    info.linkname = entry.linkname
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    # PAX only adds extended headers when a field does not fit ustar (long or non-ASCII names),
    # so ordinary entries stay plain ustar blocks; both cases are deterministic.
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def iter_tar(entries: Iterable[TarEntry]) -> Iterator[bytes]:
    """The bytes of a tar archive of ``entries`` (already sorted), streamed in pieces.

    Written by hand around ``TarInfo.tobuf`` so nothing is buffered whole and nothing host-specific
    (owner names, times, pax atime/ctime records) can slip in.
    """
    total = 0
    for entry in entries:
        header = _header(entry)
        total += len(header)
        yield header
        if entry.kind != tarfile.REGTYPE:
            continue
        remaining = entry.size
        with open(entry.source, "rb") as f:
            while remaining:
                chunk = f.read(min(_READ, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        if remaining:
            raise OSError(f"{entry.source} changed size while the layer was written")
        pad = -entry.size % tarfile.BLOCKSIZE
        if pad:
            yield bytes(pad)
        total += entry.size + pad
    end = 2 * tarfile.BLOCKSIZE
    end += -(total + end) % _TAR_RECORD
    yield bytes(end)


def hash_stream(pieces: Iterable[bytes]) -> tuple[str, int]:
    """(``sha256:<hex>``, size) of a byte stream without keeping it."""
    h, size = hashlib.sha256(), 0
    for piece in pieces:
        h.update(piece)
        size += len(piece)
    return "sha256:" + h.hexdigest(), size


def _deflate_block(block: bytes, zdict: bytes, level: int) -> bytes:
    # Raw deflate, primed with the previous block's tail so compression barely suffers from the
    # split; SYNC_FLUSH ends on a byte boundary so the blocks simply concatenate (as pigz does).
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict) if zdict else \
        zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(block) + c.flush(zlib.Z_SYNC_FLUSH)


@dataclass(frozen=True)
class GzipResult:
    diff_id: str  # sha256 of the uncompressed stream
    digest: str  # sha256 of the gzip bytes
    size: int  # gzip bytes
    uncompressed_size: int


def gzip_stream(pieces: Iterable[bytes], out: BinaryIO, level: int, pool: Executor | None,
                max_in_flight: int = 4) -> GzipResult:
    """Gzip ``pieces`` into ``out``, hashing both sides; blocks are deflated on ``pool`` threads.

    zlib releases the GIL, so on N cores this runs close to N times faster than ``gzip.compress``
    for large layers, and the output is identical for any pool size (including ``None``: inline).
    The gzip header has mtime 0, no file name, and OS byte 255, like ``gzip.compress(mtime=0)``.
    """
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    header = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes([xfl, 255])
    out_hash = hashlib.sha256(header)
    out.write(header)
    written = len(header)
    raw_hash = hashlib.sha256()
    crc, raw_size = 0, 0
    pending: deque = deque()
    buf = bytearray()
    prev_tail = b""

    def drain(keep: int) -> None:
        nonlocal written
        while len(pending) > keep:
            job = pending.popleft()
            data = job.result() if pool is not None else job
            out_hash.update(data)
            out.write(data)
            written += len(data)

    def submit(block: bytes) -> None:
        nonlocal prev_tail
        zdict = prev_tail
        prev_tail = block[-_WINDOW:]
        if pool is None:
            pending.append(_deflate_block(block, zdict, level))
        else:
            pending.append(pool.submit(_deflate_block, block, zdict, level))
        drain(max_in_flight)

    for piece in pieces:
        raw_hash.update(piece)
        crc = zlib.crc32(piece, crc)
        raw_size += len(piece)
        buf += piece
        while len(buf) >= GZIP_BLOCK:
            submit(bytes(buf[:GZIP_BLOCK]))
            del buf[:GZIP_BLOCK]
    if buf:
        submit(bytes(buf))
    drain(0)
    trailer = b"\x03\x00" + struct.pack("<II", crc, raw_size & 0xFFFFFFFF)  # empty final block
    out_hash.update(trailer)
    out.write(trailer)
    written += len(trailer)
    return GzipResult("sha256:" + raw_hash.hexdigest(), "sha256:" + out_hash.hexdigest(), written,
                      raw_size)

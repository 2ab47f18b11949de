"""The storage interface every backend implements.

Keys are relative, ``/``-separated strings made by :func:`artifact_key` or from content digests
(``docker/blobs/sha256/<hex>``); never from raw user input. Backends refuse anything else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO, Iterator

from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from ..exceptions import NotFoundError
from ..schema import BuildArtifactType

KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._:-]*)*$")
"""Allowed storage keys: relative, no empty/dot-leading segments (so no ``..``)."""

_ARTIFACT_LAYOUT = {
    BuildArtifactType.LOGS: ("logs", ".log"),
    BuildArtifactType.LOCKFILE: ("lockfile", ".yml"),
    BuildArtifactType.YAML: ("yaml", ".yml"),
    BuildArtifactType.CONDA_PACK: ("archive", ".tar.gz"),
}


def artifact_key(kind: BuildArtifactType, build_key: str) -> str:
    """Storage key of a per-build file artifact, e.g. ``lockfile/<build key>.yml``."""
    folder, suffix = _ARTIFACT_LAYOUT[BuildArtifactType(kind)]
    return f"{folder}/{build_key}{suffix}"


def blob_key(digest: str) -> str:
    """Storage key of a content-addressed blob (``sha256:<hex>``)."""
    algo, _, hexdigest = digest.partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return f"docker/blobs/sha256/{hexdigest}"


def check_key(key: str) -> str:
    if not KEY_RE.match(key) or len(key) > 512:
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(LoggingConfigurable):
    """Base class: put/get/delete artifacts by key."""

    store_directory = Unicode(help="The CondaStore store directory (set by CondaStore).").tag(config=False)

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def size(self, key: str) -> int:
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        """A binary file object for streaming ``key``; NotFoundError if it does not exist."""
        raise NotImplementedError

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with self.open(key) as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def presigned_url(self, key: str, expires_in: int = 300) -> str | None:
        """A short-lived direct URL (S3), or None when the server must stream the bytes itself."""
        return None

    def _missing(self, key: str) -> NotFoundError:
        return NotFoundError(f"artifact {key} does not exist")

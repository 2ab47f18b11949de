"""Artifacts on the local filesystem under ``<store_directory>/.artifacts``.

Nothing here is mounted as static files: the server streams artifacts after a permission check.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from traitlets import Unicode, default

from .base import Storage, check_key


class LocalStorage(Storage):
    storage_directory = Unicode(
        help="Directory holding artifacts. Defaults to ``<store_directory>/.artifacts``."
    ).tag(config=True)

    @default("storage_directory")
    def _default_dir(self) -> str:
        return str(Path(self.store_directory or ".") / ".artifacts")

    def _path(self, key: str) -> Path:
        root = Path(self.storage_directory).resolve()
        path = (root / check_key(key)).resolve()
        if not path.is_relative_to(root):  # defence in depth; check_key already forbids ..
            raise ValueError(f"invalid storage key {key!r}")
        return path

    def _write_atomically(self, key: str, writer) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                writer(f)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key, path, content_type="application/octet-stream"):
        def copy(f):
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        self._write_atomically(key, copy)

    def put_bytes(self, key, data, content_type="application/octet-stream"):
        self._write_atomically(key, lambda f: f.write(data))

    def exists(self, key):
        return self._path(key).is_file()

    def size(self, key):
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise self._missing(key) from None

    def open(self, key) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise self._missing(key) from None

    def delete(self, key):
        self._path(key).unlink(missing_ok=True)

"""Hand-made tarballs for extraction tests (hostile members included on purpose)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def write_tar(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"evil\n", compress: bool = True) -> Path:
    """Write ``members`` as given (no sanitising): regular files get ``payload`` as content."""
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for info in members:
            if info.isfile():
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return path

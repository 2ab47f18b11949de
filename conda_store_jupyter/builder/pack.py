"""conda-pack step: a relocatable tar.gz of the build prefix.

conda-pack reads rattler's ``conda-meta/*.json`` (paths, prefix placeholders, file modes), so the
archive's ``bin/conda-unpack`` rewrites prefixes after extraction anywhere. Files installed by the
``pip:`` section are not in conda-meta; conda-pack packs them as unmanaged files (text files with
the old prefix in them, e.g. pip's console-script shebangs, are not rewritten — which is why
scripts should be run through the environment's ``python``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..exceptions import ArtifactError


def pack_prefix(prefix: Path, output: Path, compress_level: int = 1) -> Path:
    """Write ``output`` (tar.gz) from ``prefix``; the archive appears only once complete."""
    import conda_pack

    output = Path(output)
    partial = output.with_name(f".{output.name}.partial")
    try:
        conda_pack.pack(
            prefix=str(prefix),
            output=str(partial),
            format="tar.gz",
            compress_level=compress_level,
            n_threads=-1,
            force=True,
            # rattler does not record editable/develop installs, and a pip-installed file that
            # was later removed by another pip package is not an error worth failing a build on.
            ignore_editable_packages=True,
            ignore_missing_files=True,
        )
        os.replace(partial, output)
    except Exception as exc:  # conda_pack.CondaPackException and I/O errors
        partial.unlink(missing_ok=True)
        raise ArtifactError(f"conda-pack could not archive the environment: {exc}") from exc
    return output

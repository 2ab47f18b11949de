"""What every part of the image builder shares: layers, bases, and the image's runtime settings.

:mod:`.image` writes environment images, :mod:`.base_image` pulls a base from a registry and
:mod:`.host_base` assembles one from the worker host's C runtime. They meet only here, so none of
them imports another (the image builder takes a :class:`BaseImage` without knowing where it came from).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

from ._oci import LAYER_TAR_GZIP

DEST_PREFIX = "/opt/conda"
"""Where the environment lives inside every image (conda-pack relocates it there)."""

IMAGE_PATH = ["/opt/conda/bin", "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
IMAGE_LANG = "C.UTF-8"
"""``LANG`` of images on a base that sets none: UTF-8 text I/O everywhere (the locale ships with glibc)."""

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "ppc64le": "ppc64le", "s390x": "s390x", "i686": "386", "armv7l": "arm"}


def image_architecture() -> str:
    """The OCI architecture name of this host (images are built for the platform they run on)."""
    machine = platform.machine().lower()
    return _ARCH.get(machine, machine)


@dataclass(frozen=True)
class Layer:
    """One layer of the image, in manifest order.

    ``packages`` are ``name-version-build`` of the conda packages whose files it holds (empty for the
    environment layer and for base-image layers). ``reused`` says the blob was already in storage
    before this build (so nothing was compressed or uploaded for it).
    """

    digest: str
    diff_id: str
    size: int
    packages: tuple[str, ...] = ()
    created_by: str = ""
    reused: bool = False
    media_type: str = LAYER_TAR_GZIP


@dataclass(frozen=True)
class BaseImage:
    """A base image whose layer blobs are in storage. ``config`` is its parsed image config.

    ``manifest_digest`` names the registry manifest it was pulled from; a base assembled on the host
    has no manifest and names its only layer instead.
    """

    reference: str
    manifest_digest: str
    layers: tuple[Layer, ...]
    config: dict[str, Any]

    @property
    def architecture(self) -> str:
        return str(self.config.get("architecture", ""))


def runtime_config(base: BaseImage | None, cmd: list[str]) -> dict[str, Any]:
    """The ``config`` section of our image config: the base's runtime settings with our environment on top.

    PATH starts with ``/opt/conda/bin`` followed by the base's PATH (so its tools stay usable), the
    base's other variables are kept (LANG defaults to :data:`IMAGE_LANG`), CONDA_PREFIX is ours;
    WorkingDir and User of the base are kept. Cmd is ours and the base's Entrypoint is dropped: the
    image's command must mean what it says, and ``docker run IMAGE python`` runs the environment's
    python. Without a base (``scratch``) this is exactly the config images always had.
    """
    ours = f"{DEST_PREFIX}/bin"
    base_cfg = (base.config.get("config") or {}) if base is not None else {}
    path = ":".join(IMAGE_PATH)
    others: list[str] = []
    for item in base_cfg.get("Env") or []:
        key, _, value = str(item).partition("=")
        if key == "PATH":
            path = ":".join([ours, *(p for p in value.split(":") if p and p != ours)])
        elif key != "CONDA_PREFIX":
            others.append(str(item))
    if base is not None and not any(item.partition("=")[0] == "LANG" for item in others):
        others.append(f"LANG={IMAGE_LANG}")
    config: dict[str, Any] = {"Env": [f"PATH={path}", *others, f"CONDA_PREFIX={DEST_PREFIX}"], "Cmd": cmd,
                              "WorkingDir": base_cfg.get("WorkingDir") or "/"}
    if base_cfg.get("User"):
        config["User"] = base_cfg["User"]
    return config

"""Run a command inside an unpacked image the way a container runtime would (tests only).

``docker run IMAGE python`` execs ``python`` inside the image's root filesystem with the image's
``Env``; nothing of the host is visible. ``chroot`` gives the same root, and a private mount + pid
namespace (``unshare``) adds the one thing every runtime provides and a bare chroot lacks: ``/proc``.
The dynamic loader needs it to expand ``$ORIGIN`` in the executable's RUNPATH
(``readlink /proc/self/exe``), and every conda binary finds its libraries through ``$ORIGIN``.
The namespaces die with the command, so nothing stays mounted on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or
                                shutil.which("chroot") is None,
                                reason="running a command inside an image root needs root (chroot and a "
                                       "/proc mount), and util-linux unshare")


def image_env(config: dict) -> dict[str, str]:
    """The environment a container of this image config starts with (its ``config.Env``)."""
    return dict(item.split("=", 1) for item in config["config"].get("Env") or [])


def oci_config(layout: Path, ref: str) -> dict:
    """The image config of ``ref`` in an OCI layout (as skopeo wrote it)."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    (entry,) = [m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref]
    manifest = json.loads((blobs / entry["digest"].split(":", 1)[1]).read_text())
    return json.loads((blobs / manifest["config"]["digest"].split(":", 1)[1]).read_text())


def run_in_rootfs(rootfs: Path, argv: list[str], env: dict[str, str],
                  timeout: float = 120) -> subprocess.CompletedProcess:
    """``argv`` run in ``rootfs`` with exactly ``env`` (``argv[0]`` is looked up in its PATH there)."""
    (rootfs / "proc").mkdir(exist_ok=True)
    return subprocess.run([shutil.which("unshare"), "--mount", "--pid", "--fork", f"--mount-proc={rootfs}/proc",
                           shutil.which("chroot"), str(rootfs), *argv],
                          env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

"""Kernelspec directories, one per environment, kept in step with the service's listing.

The specs live in a directory of their own (appended to the server's ``kernel_dirs``) that holds
nothing else, so a sync may delete every entry it did not just write without touching the
user's other kernels. A spec's content depends only on the environment (name, display name,
language), never on a build: a rebuild rewrites nothing and Lab's kernel list does not flicker.

Writes are atomic (temp file + rename in the same directory): jupyter-server lists specs
concurrently and must never read half a ``kernel.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable

from .records import EnvironmentEntry

PROVISIONER = "conda-store"
"""Entry point name in ``jupyter_client.kernel_provisioners`` (see pyproject.toml)."""

NAME_PREFIX = "conda-store-"


def kernel_name(namespace: str, environment: str) -> str:
    """``conda-store-<len(ns)>-<ns>-<env>``: stable, valid as a kernel name, and injective.

    Names may contain ``-``, ``.`` and ``_``, so ``a-b/c`` and ``a/b-c`` would collide with a
    plain separator; the namespace's length makes the split unambiguous. Lower case already
    (names are), which matters: jupyter_client lower-cases kernel directory names.
    """
    return f"{NAME_PREFIX}{len(namespace)}-{namespace}-{environment}".lower()


def kernelspec(entry: EnvironmentEntry) -> dict[str, Any]:
    """The ``kernel.json`` of an environment. The argv is a placeholder the provisioner replaces
    at every launch (it runs the fallback kernel should a spec ever be launched without it)."""
    language = (entry.build.kernel.language if entry.build and entry.build.kernel else "python").lower()
    return {
        "argv": [sys.executable, "-m", "conda_store_jupyter.jupyter.kernels.fallback", "-f", "{connection_file}"],
        "display_name": entry.display_name,
        "language": language,
        "interrupt_mode": "signal",
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": PROVISIONER,
                "config": {"namespace": entry.namespace, "environment": entry.environment},
            },
            "conda_store": {"namespace": entry.namespace, "environment": entry.environment},
        },
    }


def has_kernel(entry: EnvironmentEntry) -> bool:
    """An environment gets a spec when its current build can run a kernel."""
    return entry.build is not None and entry.build.usable and entry.build.kernel is not None


class KernelSpecDirectory:
    """``<root>/<kernel name>/kernel.json`` for each environment that has a kernel."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def sync(self, entries: Iterable[EnvironmentEntry]) -> bool:
        """Make the directory hold exactly the specs of ``entries`` that have a kernel; True if
        anything changed."""
        self.root.mkdir(parents=True, exist_ok=True)
        wanted = {kernel_name(e.namespace, e.environment): kernelspec(e) for e in entries if has_kernel(e)}
        changed = False
        for name, spec in wanted.items():
            changed |= self._write(name, spec)
            if spec["language"] == "python":
                self._logos(self.root / name)
        for child in self._existing():
            if child.name not in wanted:
                shutil.rmtree(child, ignore_errors=True)
                changed = True
        return changed

    def names(self) -> set[str]:
        return {c.name for c in self._existing()}

    def _existing(self) -> list[Path]:
        try:
            return [c for c in self.root.iterdir() if c.is_dir() and c.name.startswith(NAME_PREFIX)]
        except FileNotFoundError:
            return []

    @staticmethod
    def _logos(directory: Path) -> None:
        """Python's logos for the Launcher tile (else Lab shows the display name's first letter),
        taken from the ipykernel of the server's own environment when it has one."""
        import importlib.util

        found = importlib.util.find_spec("ipykernel")
        if found is None or not found.submodule_search_locations:
            return
        resources = Path(next(iter(found.submodule_search_locations))) / "resources"
        for logo in ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg"):
            source, target = resources / logo, directory / logo
            if source.is_file() and not target.exists():
                tmp = directory / f".{logo}.{os.getpid()}.tmp"
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)

    def _write(self, name: str, spec: dict[str, Any]) -> bool:
        directory = self.root / name
        target = directory / "kernel.json"
        text = json.dumps(spec, indent=1, sort_keys=True)
        try:
            if target.read_text(encoding="utf-8") == text:
                return False
        except OSError:
            pass
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".kernel.json.{os.getpid()}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
        return True


__all__ = ["NAME_PREFIX", "PROVISIONER", "KernelSpecDirectory", "has_kernel", "kernel_name", "kernelspec"]

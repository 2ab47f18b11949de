"""Launch-time resolution: which build, where its files are, and the command that starts it.

Order: the notebook's pin (if any) else the environment's current build, asked of the service at
this very moment (so a restart after a rebuild runs the new build). Files: the build's OWN prefix
in the store when this server sees it *and* it verifiably is that build, else the verified cache
of ``conda-store run`` (downloading the archive once). Anything that prevents a real kernel
becomes a :class:`LaunchPlan` for the fallback kernel whose ``error`` says what and what to do:
a launch never raises for a reason a user can act on.

"Verifiably that build" (store case): the directory is named by the build key, which contains the
build id AND its scheduling time (ids repeat after a database reset, times do not), it has
``conda-meta/``, and the exact kernel package record (``conda-meta/<name>-<version>-<build>.json``)
the service lists for the build. A store on another machine that happens to be mounted at the
same path fails one of these, and the archive is used instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ...cli import _run
from ...cli._errors import CLIError
from . import cache
from .records import BuildInfo, KernelPackage, LaunchPlan
from .service import KernelService, ServiceUnavailable

FALLBACK_MODULE = "conda_store_jupyter.jupyter.kernels.fallback"
ERROR_ENV = "CONDA_STORE_KERNEL_ERROR"
"""The fallback kernel reads what went wrong from this variable."""

MAX_NOTEBOOK_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class LaunchOptions:
    use_store_path: bool = True
    archive_wait: float = 300.0
    cache_root: Path | None = None


# --------------------------------------------------------------------------- the pin


def read_pin(session_name: str | None, root_dir: str | None, namespace: str, environment: str) -> int | None:
    """``metadata.conda_store.pin_build`` of the saved notebook ``session_name`` names.

    jupyter-server sets ``JPY_SESSION_NAME`` to the notebook's path, relative to ``root_dir`` or
    absolute. A pin counts only if the notebook's ``conda_store`` metadata is about this same
    environment (or does not say): a notebook switched to another environment's kernel must not
    carry the old environment's build number over.
    """
    if not session_name or not session_name.endswith(".ipynb"):
        return None
    path = Path(session_name)
    if not path.is_absolute():
        path = Path(root_dir or os.getcwd()) / path
    try:
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            return None
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh).get("metadata", {}).get("conda_store")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(meta, dict):
        return None
    if meta.get("namespace", namespace) != namespace or meta.get("environment", environment) != environment:
        return None
    pin = meta.get("pin_build")
    if isinstance(pin, bool) or not isinstance(pin, int) or pin <= 0:
        return None
    return pin


# --------------------------------------------------------------------------- files


def store_prefix(build: BuildInfo) -> Path | None:
    """The build's prefix in the store if this server sees it and it is that build."""
    prefix = Path(build.prefix)
    if prefix.name != build.build_key or not (prefix / "conda-meta").is_dir():
        return None
    kernel = build.kernel
    if kernel is not None and not (prefix / "conda-meta" / f"{kernel.name}-{kernel.version}-{kernel.build}.json").is_file():
        return None
    return prefix


_ARGV = {
    "ipykernel": ["bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    "r-irkernel": ["bin/R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],
    "xeus-python": ["bin/xpython", "-f", "{connection_file}"],
}


def kernel_argv(prefix: Path, package: KernelPackage) -> list[str] | None:
    """The command that starts ``package``'s kernel from ``prefix`` (absolute executable).

    Known packages use their documented launcher; others use the kernelspec the package
    installed into ``share/jupyter/kernels`` with its program made absolute in the prefix.
    """
    known = _ARGV.get(package.name)
    if known is not None:
        exe = prefix / known[0]
        return [str(exe), *known[1:]] if exe.exists() else None
    for spec_file in sorted((prefix / "share" / "jupyter" / "kernels").glob("*/kernel.json")):
        try:
            argv = list(json.loads(spec_file.read_text(encoding="utf-8"))["argv"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if argv and not os.path.isabs(argv[0]):
            exe = prefix / "bin" / argv[0]
            if exe.exists():
                return [str(exe), *argv[1:]]
        elif argv and Path(argv[0]).exists():
            return argv
    return None


def kernel_environ(prefix: Path, name: str, build_id: int) -> dict[str, str]:
    """What activation sets (PATH, CONDA_PREFIX, no PYTHONHOME…), plus which build runs."""
    env = {k: v for k, v in _run.activated_environ(prefix, environ=dict(os.environ), name=name).items()
           if k in ("PATH", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_SHLVL")}
    env["CONDA_STORE_BUILD_ID"] = str(build_id)
    return env


def with_activation_hooks(prefix: Path, argv: list[str]) -> list[str]:
    """Source the prefix's ``etc/conda/activate.d/*.sh`` first, as ``conda-store run`` does."""
    hooks = _run._activation_scripts(prefix)
    if not hooks:
        return argv  # the common case: no shell in between, nothing added to the start time
    return ["/bin/sh", "-c", _run._HOOK_RUNNER, "conda-store-kernel", str(len(hooks)), *hooks, *argv]


# --------------------------------------------------------------------------- the plan


def fallback(namespace: str, environment: str, error: str, *, pinned: int | None = None,
             build_id: int | None = None) -> LaunchPlan:
    argv = [sys.executable, "-m", FALLBACK_MODULE, "-f", "{connection_file}"]
    return LaunchPlan(argv=argv, env={ERROR_ENV: error}, namespace=namespace, environment=environment,
                      build_id=build_id, pinned=pinned, error=error)


async def resolve_launch(service: KernelService, source: cache.Source | None, options: LaunchOptions,
                         namespace: str, environment: str, pinned: int | None) -> LaunchPlan:
    name = f"{namespace}/{environment}"

    def fail(reason: str, build_id: int | None = None) -> LaunchPlan:
        return fallback(namespace, environment, reason, pinned=pinned, build_id=build_id)

    try:
        entry = await service.one(namespace, environment, pinned)
    except ServiceUnavailable as exc:
        return fail(f"The kernel for {name} could not be started: {exc}. Check that the service is up "
                    "(or c.CondaStoreExtension.url/token), then restart this kernel.")
    if entry is None:
        return fail(f"The environment {name} does not exist any more, or you may no longer read it. "
                    "Choose another kernel (Kernel > Change Kernel).")
    build = entry.build
    if build is None and pinned is not None:
        return fail(f"This notebook is pinned to build {pinned} (metadata.conda_store.pin_build), which is "
                    f"not a build of {name}. Clear the pin in the conda-store panel, save, and restart the kernel.")
    if build is None:
        return fail(f"{name} has no completed build yet. Wait for its build to complete (see the conda-store "
                    "panel), then restart this kernel.")
    what = f"build {build.id} of {name}" + (" (this notebook's pinned build)" if pinned is not None else "")
    todo = ("Clear or change the pin in the conda-store panel, save, and restart the kernel." if pinned is not None
            else "Rebuild the environment, then restart this kernel.")
    if build.deleted:
        return fail(f"The {what} was deleted. {todo}", build.id)
    if build.status != "COMPLETED":
        return fail(f"The {what} is {build.status}, not COMPLETED. {todo}", build.id)
    if build.kernel is None:
        return fail(f"The {what} has no kernel package. Add ipykernel (Python) or r-irkernel (R) to its "
                    "dependencies and rebuild, then restart this kernel.", build.id)

    prefix: Path | None = store_prefix(build) if options.use_store_path else None
    origin = "store"
    if prefix is None:
        if source is None:
            return fail(f"The {what} is not on this server's filesystem and no service is configured to fetch "
                        "it from.", build.id)
        origin = "cache"
        try:
            prefix, _ = await asyncio.to_thread(cache.ensure_unpacked, source, build.id, build.identity(environment),
                                                wait=options.archive_wait, root=options.cache_root)
        except (cache.ArchiveError, CLIError) as exc:
            return fail(f"The {what} is not on this server's filesystem and its archive could not be used: {exc}",
                        build.id)
        except OSError as exc:
            return fail(f"Unpacking the {what} into the local cache failed: {exc}. Free some disk space "
                        "(~/.cache/conda-store) and restart this kernel.", build.id)
    argv = kernel_argv(prefix, build.kernel)
    if argv is None:
        return fail(f"The {what} lists {build.kernel.name} but its launcher is missing from {prefix}. "
                    "Rebuild the environment, then restart this kernel.", build.id)
    return LaunchPlan(argv=with_activation_hooks(prefix, argv), env=kernel_environ(prefix, name, build.id),
                      namespace=namespace, environment=environment, build_id=build.id,
                      lockfile_sha256=build.lockfile_sha256, prefix=str(prefix), source=origin, pinned=pinned)


__all__ = ["ERROR_ENV", "LaunchOptions", "fallback", "kernel_argv", "read_pin", "resolve_launch", "store_prefix"]

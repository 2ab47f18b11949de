"""Orchestrates one build: solve → lockfile → install → pip → lockfile (+pip) → YAML → conda-pack.

Each step lives in its own module and passes typed records (``records.py``) to the next. This
module adds what a build needs around the steps: a deadline, stage timings in the log, turning
any failure into the right :class:`~conda_store_jupyter.exceptions.BuildError` with a
one-paragraph reason ending the log (and on top of it), and removing whatever was half-built.

It takes only typed settings and paths and returns typed results: it imports neither the
database, the queue nor the configuration object (the worker turns its configuration into
:class:`BuildSettings` and records the results), so the same function runs a build from
``python -m conda_store_jupyter.builder`` without a server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Iterator

from ..exceptions import (
    ArtifactError,
    BuildError,
    BuildTimeoutError,
    InstallError,
    SolveError,
)
from ..schema import BuildArtifactType, Specification, channel_allowed
from ..urls import redact_text, redact_url
from .export import write_pinned_yaml
from .install import cached_summaries, install_conda
from .lockfile import write_lockfile
from .log import BuildLog
from .pack import pack_prefix
from .pip import install_pip
from .records import BuildOutputs, BuildPaths, BuildSettings, InstalledPackage, PipPackage
from .solve import solve_specification


# -- settings -------------------------------------------------------------------------------------
def effective_specification(spec: Specification, settings: BuildSettings) -> Specification:
    """``spec`` plus the store's included packages; SolveError if the store's policy refuses it.

    The policy is checked here, when the build runs, and not only when the specification was
    submitted: a rebuild must not use a channel the store has stopped allowing since.
    """
    from rattler import MatchSpec

    if settings.allowed_channels is not None:
        for channel in settings.channels:
            if not channel_allowed(channel, settings.allowed_channels):
                raise SolveError(f"channel {redact_url(channel)} is not allowed (conda_allowed_channels)")

    names = spec.conda_names
    missing = [r for r in settings.required_packages if MatchSpec(r).name.normalized not in names]
    if missing:
        raise SolveError(
            f"the specification must list {', '.join(missing)} (required for every environment "
            "by this conda-store); add it to dependencies"
        )
    return spec.with_packages(settings.included_packages)


# -- the pipeline -------------------------------------------------------------------------------
_STAGE_ERRORS: dict[str, type[BuildError]] = {
    "solve": SolveError,
    "fetch": InstallError,  # a lockfile build's lookup of the locked files (from_lock.py)
    "install": InstallError,
    "pip": InstallError,
}


class BuildRun:
    """State of one running build (what to clean up, which stage we are in).

    ``run`` is the solve pipeline; ``from_lock.LockBuildRun`` replaces it with "install exactly
    a lockfile" and keeps the rest (stages, deadline, cleanup)."""

    def __init__(self, spec: Specification, settings: BuildSettings, paths: BuildPaths, log: BuildLog) -> None:
        self.spec = spec
        self.settings = settings
        self.paths = paths
        self.log = log
        self.created_prefix = False
        self.written: list[Path] = []  # artifacts to remove if the build fails after writing them
        self.deadline = time.monotonic() + settings.timeout if settings.timeout is not None else None

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.001, self.deadline - time.monotonic())

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the stage in the log; turn unexpected exceptions into its BuildError subclass."""
        with self.log.stage(name):
            try:
                yield
            except (BuildError, asyncio.CancelledError):
                raise
            except Exception as exc:
                self.log.write(traceback.format_exc().rstrip())
                error = _STAGE_ERRORS.get(name, ArtifactError)
                raise error(f"{name} failed: {type(exc).__name__}: {exc}") from exc

    async def run(self) -> BuildOutputs:
        spec, settings, paths, log = self.spec, self.settings, self.paths, self.log
        first_timing = len(log.timings)
        spec = effective_specification(spec, settings)
        log.write(f"environment {spec.name}: {len(spec.dependencies)} conda spec(s), {len(spec.pip)} pip requirement(s)")
        log.write(f"channels: {' '.join(redact_url(c) for c in settings.channels)}")
        log.write(f"platforms: {' '.join(settings.platforms)} (installing {settings.host_platform})")

        with self.stage("solve"):
            solved = await solve_specification(spec.dependencies, settings, timeout=self.remaining())
            host = solved.host
            for p in host.packages:
                log.write(f"  {p.name} {p.version} {p.build}  ({p.subdir})")
            if spec.pip and "python" not in {p.name for p in host.packages}:
                raise InstallError(
                    "the specification has a pip: section but no python is being installed; "
                    "add python to its dependencies"
                )

        if spec.pip:
            # Written now so a build that fails in install/pip still documents its solve;
            # rewritten below with the pip pins.
            with self.stage("lockfile"):
                self._written(write_lockfile(paths.lockfile, spec, solved))

        with self.stage("install"):
            self._claim_prefix(paths.prefix)
            await install_conda(host, paths.prefix, settings, spec.dependencies)
            if spec.variables:
                self._write_variables(paths.prefix, spec.variables)

        pip_packages: tuple[PipPackage, ...] = ()
        if spec.pip:
            with self.stage("pip"):
                pip_packages = await install_pip(paths.prefix, spec.pip, settings, log)
                for pp in pip_packages:
                    log.write(f"  pip {pp.name} {pp.version}  {pp.url}  sha256:{pp.sha256}")

        with self.stage("lockfile+yaml" if spec.pip else "lockfile"):
            self._written(write_lockfile(paths.lockfile, spec, solved, pip_packages))
            packages = cached_summaries(host.packages, settings)
            self._written(write_pinned_yaml(paths.yaml, spec, settings.channels, packages, pip_packages))

        return await self._pack_and_finish(first_timing, packages, pip_packages, solved.platforms)

    # -- helpers ----------------------------------------------------------------------------
    async def _pack_and_finish(self, first_timing: int, packages: tuple[InstalledPackage, ...],
                               pip_packages: tuple[PipPackage, ...], platforms: tuple[str, ...]) -> BuildOutputs:
        """The last steps of every build, however it installed: the conda-pack archive when the
        settings ask for one, the prefix's size, and the outputs record."""
        settings, paths, log = self.settings, self.paths, self.log
        archive: Path | None = None
        if BuildArtifactType.CONDA_PACK in settings.artifacts:
            with self.stage("conda-pack"):
                archive = await self._in_thread(
                    pack_prefix, paths.prefix, paths.archive, settings.conda_pack_compress_level
                )
                self._written(archive)

        size = prefix_size(paths.prefix)
        log.write(f"environment size: {size / 1e6:.1f} MB")
        return BuildOutputs(
            prefix=paths.prefix,
            lockfile=paths.lockfile,
            yaml=paths.yaml,
            archive=archive,
            log=paths.log,
            packages=packages,
            pip_packages=pip_packages,
            timings=log.timings[first_timing:],
            size_bytes=size,
            platforms=platforms,
        )

    def _written(self, path: Path) -> Path:
        self.written.append(path)
        return path

    def _claim_prefix(self, prefix: Path) -> None:
        """Create the prefix; refuse one that has content (a build never installs over another)."""
        if prefix.exists() and (not prefix.is_dir() or any(prefix.iterdir())):
            raise InstallError(f"the build prefix {prefix} already exists and is not empty")
        prefix.mkdir(parents=True, exist_ok=True)
        self.created_prefix = True

    @staticmethod
    def _write_variables(prefix: Path, variables: dict[str, str]) -> None:
        # conda keeps per-environment variables in conda-meta/state; `conda activate` sets them.
        state = prefix / "conda-meta" / "state"
        state.write_text(json.dumps({"env_vars": dict(variables)}, indent=2) + "\n")

    async def _in_thread(self, fn, *args):  # type: ignore[no-untyped-def]
        """Run blocking work in a private thread so a timeout does not wait for it to finish.

        The default executor is joined when the event loop closes; a private one is not, and the
        work itself stops soon after the prefix it reads is removed by the cleanup.
        """
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="build")
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        finally:
            pool.shutdown(wait=False)

    def cleanup(self) -> None:
        """Remove what a failed build half-made: the prefix and the artifacts except the lockfile.

        The lockfile is kept on purpose: it records what was solved, which is the first thing
        to look at when an install fails.
        """
        if self.created_prefix:
            shutil.rmtree(self.paths.prefix, ignore_errors=True)
        for path in self.written:
            if path != self.paths.lockfile:
                path.unlink(missing_ok=True)
        self.paths.archive.with_name(f".{self.paths.archive.name}.partial").unlink(missing_ok=True)


def prefix_size(prefix: Path) -> int:
    """Bytes of the files in ``prefix``, each hard-linked file counted once."""
    seen: set[int] = set()
    total = 0
    stack = [str(prefix)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_ino not in seen:
                        seen.add(st.st_ino)
                        total += st.st_size
    return total


def _reason(exc: BaseException) -> str:
    """One paragraph: no newlines, so it fits a status line, a log header and stderr."""
    return " ".join(str(exc).split())


async def run_pipeline_async(
    spec: Specification, settings: BuildSettings, output: BuildPaths, log: BuildLog
) -> BuildOutputs:
    """Run one build (see module docstring). Raises a BuildError subclass on any failure,
    after ending the log with the reason (``BuildLog.fail``) and removing the half-built prefix."""
    return await execute(BuildRun(spec, settings, output, log))


async def execute(build: BuildRun) -> BuildOutputs:
    """Run ``build`` under its deadline; on failure end its log with the reason and clean up."""
    settings, log = build.settings, build.log
    try:
        async with asyncio.timeout(settings.timeout) as deadline:
            return await build.run()
    except BaseException as exc:
        if isinstance(exc, TimeoutError) and deadline.expired():
            error: BaseException = BuildTimeoutError(
                f"the build took longer than its {settings.timeout:g} s limit and was stopped"
            )
        elif isinstance(exc, BuildError):
            error = exc
        elif isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            error = BuildError("the build was canceled")
        else:  # a bug outside any stage: keep the traceback in the log, not in the reason
            log.write(traceback.format_exc().rstrip())
            error = BuildError(f"internal error: {type(exc).__name__}: {exc}")
        build.cleanup()
        if redact_text(str(error)) != str(error):  # the reason is stored and shown: no secrets
            error = type(error)(redact_text(str(error)))
        log.fail(_reason(error))
        if error is exc:
            raise
        raise error from exc


def run_pipeline(spec: Specification, settings: BuildSettings, output: BuildPaths, log: BuildLog) -> BuildOutputs:
    """Synchronous entry point (worker jobs, CLI). Safe to call from inside an event loop too."""
    return run_blocking(BuildRun(spec, settings, output, log))


def run_blocking(build: BuildRun) -> BuildOutputs:
    """:func:`execute` ``build`` synchronously, in a fresh event loop (another thread if one runs here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_loop = False
    else:
        in_loop = True
    if not in_loop:  # outside the except block: a build error must not chain "no running event loop"
        return asyncio.run(execute(build))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(execute(build))).result()

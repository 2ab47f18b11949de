"""A build from a lockfile specification: install exactly the lock, no solve.

The steps, in place of the solve pipeline's (:mod:`.pipeline` keeps the frame: deadline, stage
timings, failure reasons, cleanup):

1. **lockfile**: the submitted lockfile is written out as the build's LOCKFILE artifact, the same
   document (a build of a lock records that lock, not a new one).
2. **fetch**: each conda package of the host platform is looked up in its channel by its exact
   URL (no solve), and the channel's sha256/md5 must equal the lock's: a channel that now serves
   something else under that name fails the build naming the package and both hashes. Files of
   ``file://`` channels are hashed here (py-rattler copies those unchecked).
3. **install**: py-rattler downloads and links those records; it checks each file it downloads
   against the record's sha256 (which is the lock's, see 2), so a file that does not hash as
   locked fails the build. The prefix's records are then compared with the lock once more.
4. **pip**: the lock's pip entries, pinned and hash-checked (``pip.install_locked_pip``).
5. the pinned YAML and conda-pack, as for any build.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import yaml

from ..exceptions import ArtifactError, InstallError, SolveError
from ..lockspec import LockedFile, LockSpecification
from ..schema import Specification, channel_allowed
from ..urls import redact_text, redact_url
from .export import write_pinned_yaml
from .install import cached_summaries, install_conda
from .log import BuildLog
from .pip import install_locked_pip
from .pipeline import BuildRun, run_blocking
from .records import BuildOutputs, BuildPaths, BuildSettings, InstalledPackage, PipPackage, PlatformSolution
from .solve import gateway_for, package_from_record

if TYPE_CHECKING:
    from rattler import RepoDataRecord

_HEADER = """\
# This lockfile was submitted as the specification of this environment (is_lockfile) and
# installed exactly as locked, without solving. Install it with conda-lock:
#     conda-lock install --name YOURENV {name}
"""


def write_submitted_lockfile(path: Path, lock: LockSpecification) -> Path:
    """The submitted lockfile, as the build's LOCKFILE artifact (atomically, like ``lockfile.py``)."""
    path = Path(path)
    try:
        text = _HEADER.format(name=path.name) + yaml.safe_dump(lock.lockfile, sort_keys=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".lock-", delete=False,
                                         encoding="utf-8") as tmp:
            tmp.write(text)
        os.replace(tmp.name, path)
    except OSError as exc:
        raise ArtifactError(f"could not write the lockfile {path.name}: {exc}") from exc
    return path


def check_channels(lock: LockSpecification, settings: BuildSettings) -> None:
    """The channel policy, again when the build runs: a rebuild must not use a channel the store
    has stopped allowing since the lockfile was submitted."""
    if settings.allowed_channels is None:
        return
    for channel in settings.channels:
        if not channel_allowed(channel, settings.allowed_channels):
            raise SolveError(f"channel {redact_url(channel)} is not allowed (conda_allowed_channels)")


def _hash_mismatch(f: LockedFile, record: "RepoDataRecord") -> str | None:
    sha256 = record.sha256.hex() if record.sha256 else None
    md5 = record.md5.hex() if record.md5 else None
    if sha256 != f.sha256:
        return f"{f.pin}: sha256 mismatch: the lockfile has {f.sha256}, the channel {sha256 or 'none'}"
    if f.md5 and md5 and md5 != f.md5:
        return f"{f.pin}: md5 mismatch: the lockfile has {f.md5}, the channel {md5}"
    return None


async def locked_records(
    lock: LockSpecification, files: Sequence[LockedFile], settings: BuildSettings
) -> tuple["RepoDataRecord", ...]:
    """The channels' records of exactly the locked files, in lock order; InstallError naming each
    package that is gone or whose hashes differ from the lock."""
    from rattler import MatchSpec

    platform = settings.host_platform
    # The name/version/build query finds the file even if its hash changed, so the error can
    # say "hash mismatch" rather than "not found".
    specs = [MatchSpec(f"{f.name} =={f.version} {f.build}") for f in files]
    gateway = gateway_for(settings)
    try:
        found = await gateway.query(list(settings.channels), [platform, "noarch"], specs, recursive=False)
    except Exception as exc:  # noqa: BLE001 - rattler's own (unexported) error classes
        raise InstallError(f"could not read the lockfile's channels: {redact_text(str(exc))}") from exc
    by_url = {redact_url(str(r.url)): r for per_channel in found for r in per_channel}
    missing = [f.pin for f in files if redact_url(f.url) not in by_url]
    if missing:
        raise InstallError(f"locked package(s) not available from the lockfile's channels: {', '.join(missing)}")
    records = tuple(by_url[redact_url(f.url)] for f in files)
    wrong = [m for f, r in zip(files, records) if (m := _hash_mismatch(f, r))]
    if wrong:
        raise InstallError("the channel does not serve the locked file(s): " + "; ".join(wrong))
    return records


def _file_hashes(path: Path) -> tuple[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()  # noqa: S324 - md5 is what conda records, compared only
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def check_local_files(files: Sequence[LockedFile], records: Sequence["RepoDataRecord"]) -> int:
    """Hash the locked files of ``file://`` channels; InstallError naming each that differs.

    py-rattler checks the sha256 of what it downloads over HTTP(S) against the record (the lock's
    hash, see ``locked_records``) but copies ``file://`` packages unchecked, so those are checked
    here, before anything is installed. Returns how many files were hashed.
    """
    wrong = []
    hashed = 0
    for f, record in zip(files, records):
        url = str(record.url)
        if not url.startswith("file://"):
            continue
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        try:
            sha256, md5 = _file_hashes(path)
        except OSError as exc:
            raise InstallError(f"{f.pin}: cannot read {path}: {exc.strerror or exc}") from exc
        hashed += 1
        if sha256 != f.sha256:
            wrong.append(f"{f.pin}: the file's sha256 is {sha256}, the lockfile has {f.sha256}")
        elif f.md5 and md5 != f.md5:
            wrong.append(f"{f.pin}: the file's md5 is {md5}, the lockfile has {f.md5}")
    if wrong:
        raise InstallError("package file(s) do not match the lockfile: " + "; ".join(wrong))
    return hashed


def check_installed(prefix: Path, files: Sequence[LockedFile]) -> None:
    """The prefix holds exactly the locked conda packages, each with the lock's sha256."""
    from rattler import PrefixRecord

    installed = {}
    for meta in (prefix / "conda-meta").glob("*.json"):
        record = PrefixRecord.from_path(meta)
        installed[record.name.normalized] = record
    problems = []
    for f in files:
        record = installed.pop(f.name, None)
        if record is None:
            problems.append(f"{f.pin} is missing")
        elif (str(record.version), str(record.build)) != (f.version, f.build):
            problems.append(f"{f.pin} is installed as {record.version} {record.build}")
        elif (sha256 := record.sha256.hex() if record.sha256 else None) != f.sha256:
            problems.append(f"{f.pin} was installed from a file with sha256 {sha256 or 'none'}")
    problems += [f"{name} is not in the lockfile" for name in sorted(installed)]
    if problems:
        raise InstallError("the environment does not match the lockfile: " + "; ".join(problems))


class LockBuildRun(BuildRun):
    """One build of a :class:`~conda_store_jupyter.lockspec.LockSpecification` (module docstring)."""

    def __init__(self, lock: LockSpecification, settings: BuildSettings, paths: BuildPaths, log: BuildLog) -> None:
        # The pinned YAML is written for this Specification: the lock's name and channels.
        spec = Specification(name=lock.name, channels=list(settings.channels), description=lock.description)
        super().__init__(spec, settings, paths, log)
        self.lock = lock

    async def run(self) -> BuildOutputs:
        lock, settings, paths, log = self.lock, self.settings, self.paths, self.log
        first_timing = len(log.timings)
        platform = settings.host_platform
        check_channels(lock, settings)
        files = lock.files(platform)
        conda = [f for f in files if f.manager == "conda"]
        pip = [PipPackage(f.name, f.version, f.url or None, f.sha256) for f in files if f.manager == "pip"]
        if not conda:  # checked on submission for the server's platform; a worker may run another
            raise InstallError(f"the lockfile has no conda packages for {platform} (it locks "
                               f"{', '.join(lock.platforms) or 'no platform'})")
        log.write(f"environment {lock.name}: installing exactly the lockfile's {len(conda)} conda and "
                  f"{len(pip)} pip package(s) for {platform}, without solving")
        log.write(f"channels: {' '.join(redact_url(c) for c in settings.channels)}")
        log.write(f"platforms: {' '.join(lock.platforms)} (installing {platform})")

        with self.stage("lockfile"):
            self._written(write_submitted_lockfile(paths.lockfile, lock))

        with self.stage("fetch"):
            records = await locked_records(lock, conda, settings)
            packages = tuple(package_from_record(r) for r in records)
            for p in packages:
                log.write(f"  {p.name} {p.version} {p.build}  ({p.subdir})  sha256:{p.sha256}")
            hashed = await asyncio.to_thread(check_local_files, conda, records)
            log.write(f"  hashes: the channel's records match the lockfile; {hashed} local file(s) hashed, "
                      f"{len(conda) - hashed} checked by the installer as they download")

        with self.stage("install"):
            self._claim_prefix(paths.prefix)
            solution = PlatformSolution(platform=platform, packages=packages, records=records)
            try:
                await install_conda(solution, paths.prefix, settings, [f.name for f in conda])
            except InstallError as exc:
                if "hash mismatch" not in str(exc):
                    raise
                raise InstallError(f"a downloaded package file does not match the lockfile's sha256: {exc}") from exc
            check_installed(paths.prefix, conda)
            log.write(f"  {len(conda)} package(s) installed, each file's sha256 as locked")

        pip_packages: tuple[PipPackage, ...] = ()
        if pip:
            with self.stage("pip"):
                pip_packages = await install_locked_pip(paths.prefix, pip, settings, log)
                for pp in pip_packages:
                    log.write(f"  pip {pp.name} {pp.version}  sha256:{pp.sha256}")

        with self.stage("yaml"):
            summaries: tuple[InstalledPackage, ...] = cached_summaries(packages, settings)
            self._written(write_pinned_yaml(paths.yaml, self.spec, settings.channels, summaries, pip_packages))

        return await self._pack_and_finish(first_timing, summaries, pip_packages, tuple(lock.platforms))


def run_lock_pipeline(lock: LockSpecification, settings: BuildSettings, output: BuildPaths,
                      log: BuildLog) -> BuildOutputs:
    """Build ``lock`` (synchronously, like ``pipeline.run_pipeline``); BuildError subclasses on failure."""
    return run_blocking(LockBuildRun(lock, with_credentials(settings), output, log))


def with_credentials(settings: BuildSettings) -> BuildSettings:
    """``settings`` with each lockfile channel recorded without its credentials (``https://u:***@…``,
    ``/t/***/``) replaced by the allowed channel it was redacted from, which the build can fetch."""
    configured = {redact_url(c): c for c in settings.allowed_channels or ()}
    channels = tuple(configured.get(c, c) for c in settings.channels)
    return dataclasses.replace(settings, channels=channels) if channels != settings.channels else settings

"""Pip step: lock the ``pip:`` section with uv, install exactly that lock, report what it installed.

The lockfile must name the exact file of every pip distribution (URL + sha256), whatever index it
came from: the store's ``pip_index_url``/``pip_find_links`` or, when those are not configured, the
host's own uv configuration (``UV_INDEX_URL``/``UV_DEFAULT_INDEX``, ``uv.toml``; PyPI by default).
Guessing afterwards which file uv installed cannot work for an index we were never told about, so
the step runs in two parts, both through uv with the same source settings:

1. ``uv pip compile --format pylock.toml --python <prefix python>`` resolves the section for the
   environment's own interpreter and platform into a PEP 751 lock: every distribution with the URL
   and sha256 of the one file chosen for that interpreter.
2. :func:`install_locked_pip` installs exactly those files (``name==version --hash=sha256:…``,
   ``--no-deps``, ``--require-hashes``). Reinstalling a build from its ``conda-lock.yml`` uses the
   same function with the lockfile's pip entries, so it gives the same distributions or fails.

Python distributions that conda already installed (``*.dist-info`` owned by a conda package) are
left to conda: they are excluded from the pip resolution, as conda-lock does, so pip never
overwrites a conda package's files.
"""

from __future__ import annotations

import asyncio
import email.parser
import json
import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Iterable, Sequence

from ..exceptions import InstallError
from ..urls import redact_url
from .log import BuildLog
from .records import BuildSettings, PipPackage

# Variables that would make uv, or the prefix's python that uv queries, look at something other
# than the prefix and our settings: another virtualenv or conda env, a PYTHONPATH that injects
# foreign site-packages, pip's own configuration (uv ignores it; scrubbed so it never matters).
_SCRUBBED_PREFIXES = ("UV_", "PIP_", "PYTHON", "VIRTUAL_ENV", "CONDA_")

# uv settings that say WHERE packages come from and how to reach it. When the store configures no
# pip source, these (and uv's user/system config files) are the host's choice and are honoured;
# settings that change WHAT is installed or WHERE (target, python, no-deps...) never are.
_HOST_SOURCE_PREFIXES = ("UV_INDEX",)  # UV_INDEX, UV_INDEX_URL, UV_INDEX_STRATEGY, UV_INDEX_<N>_USERNAME...
_HOST_SOURCE_VARIABLES = frozenset({
    "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "UV_NO_INDEX", "UV_KEYRING_PROVIDER",
    "UV_INSECURE_HOST", "UV_NATIVE_TLS", "UV_OFFLINE", "UV_HTTP_TIMEOUT", "UV_HTTP_RETRIES",
    "UV_CONCURRENT_DOWNLOADS", "UV_CONFIG_FILE", "UV_NO_CONFIG", "UV_EXCLUDE_NEWER", "UV_PRERELEASE",
})

_FAILED = "installing the pip: section failed"
"""How every failure of this step starts (resolving or installing: to the user it is one step)."""


# -- uv invocation ------------------------------------------------------------------------------
def uv_executable() -> str:
    """The uv binary: the one installed with us (next to ``sys.executable``) or on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("uv")
    if found:
        return found
    try:  # the `uv` wheel also exposes the path of its bundled binary
        from uv import find_uv_bin

        return find_uv_bin()
    except Exception as exc:  # noqa: BLE001
        raise InstallError("the pip: section needs uv, which was not found next to python or on PATH") from exc


def uses_host_uv_configuration(settings: BuildSettings) -> bool:
    """True when the store names no pip source, so uv's own configuration on this host decides."""
    return not (settings.pip_index_url or settings.pip_find_links)


def _host_source_variable(name: str) -> bool:
    return name in _HOST_SOURCE_VARIABLES or name.startswith(_HOST_SOURCE_PREFIXES)


def uv_environment(settings: BuildSettings) -> dict[str, str]:
    """uv's environment: scrubbed, with its cache in the package cache (a build writes nowhere else).

    With a store-configured pip source the build is hermetic (no uv config at all); without one,
    the host's uv source settings pass through (see ``_HOST_SOURCE_VARIABLES``).
    """
    host = uses_host_uv_configuration(settings)
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED_PREFIXES) or (host and _host_source_variable(k))
    }
    env.update(
        UV_CACHE_DIR=str(settings.uv_cache_directory),
        UV_PYTHON_DOWNLOADS="never",
        UV_PYTHON_INSTALL_DIR=str(settings.uv_cache_directory / "python"),
        UV_NO_PROGRESS="1",
        NO_COLOR="1",
    )
    if not host:
        env["UV_NO_CONFIG"] = "1"
    return env


def uv_source_arguments(settings: BuildSettings) -> list[str]:
    """Where uv looks for distributions: the store's settings, or nothing (uv's configuration)."""
    if uses_host_uv_configuration(settings):
        return []
    args = ["--no-config"]
    if settings.pip_index_url:
        args += ["--default-index", settings.pip_index_url]
    else:
        args.append("--no-index")  # only the configured wheel directories, never an implicit PyPI
    for link in settings.pip_find_links:
        args += ["--find-links", link]
    return args


def prefix_python(prefix: Path) -> Path:
    for candidate in (prefix / "bin" / "python", prefix / "python.exe"):
        if candidate.exists():
            return candidate
    raise InstallError(
        "the specification has a pip: section but the environment has no python; add python to its dependencies"
    )


async def _run_uv(
    args: Sequence[str], settings: BuildSettings, log: BuildLog, failure: str | None
) -> str | None:
    """Run ``uv ARGS``; stderr (progress, errors) goes into the log, stdout is returned.

    A non-zero exit raises InstallError starting with ``failure``; with ``failure=None`` it is
    returned as ``None`` instead of the output.

    A subprocess, so that a cancelled/timed-out build kills it (see ``finally``). Its working
    directory is the filesystem root: uv reads project settings (``uv.toml``, ``pyproject.toml``)
    from the working directory and its parents, and a build must not pick up a project's.
    """
    settings.uv_cache_directory.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        uv_executable(), *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=uv_environment(settings),
        cwd=os.path.abspath(os.sep),
    )
    lines: list[str] = []

    async def follow(stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            lines.append(line)
            log.write(line)

    try:
        assert proc.stdout is not None and proc.stderr is not None
        out, _ = await asyncio.gather(proc.stdout.read(), follow(proc.stderr))
        rc = await proc.wait()
    finally:
        if proc.returncode is None:  # cancelled (timeout): do not leave uv running
            proc.kill()
            await proc.wait()
    if rc != 0 and failure is None:
        return None
    if rc != 0:
        # uv's own explanation (e.g. "Because tomli was not found in the package registry ...")
        detail = " ".join(line.strip() for line in lines if line.strip() and not line.startswith("Using "))
        raise InstallError(f"{failure}: {detail or f'uv exited with {rc}'}")
    return out.decode("utf-8", "replace")


# -- what conda installed ---------------------------------------------------------------------------
def _conda_owned_dist_infos(prefix: Path) -> set[str]:
    """Names of ``*.dist-info`` directories installed by conda packages (from conda-meta)."""
    owned: set[str] = set()
    for meta in (prefix / "conda-meta").glob("*.json"):
        try:
            files = json.loads(meta.read_text()).get("files", [])
        except (OSError, ValueError):
            continue
        for f in files:
            head, sep, _ = f.partition(".dist-info/")
            if sep:
                owned.add(head.rsplit("/", 1)[-1] + ".dist-info")
    return owned


def _site_packages_dirs(prefix: Path) -> list[Path]:
    return sorted(prefix.glob("lib/python*/site-packages")) + [p for p in [prefix / "Lib" / "site-packages"] if p.is_dir()]


def _read_metadata(dist_info: Path) -> tuple[str, str, tuple[str, ...]] | None:
    """(canonical name, version, Requires-Dist lines) of an installed distribution."""
    from packaging.utils import canonicalize_name

    try:
        text = (dist_info / "METADATA").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    msg = email.parser.HeaderParser().parsestr(text)
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        return None
    return canonicalize_name(name), version, tuple(msg.get_all("Requires-Dist") or ())


def installed_distributions(prefix: Path) -> tuple[dict[str, str], dict[str, PipPackage]]:
    """The prefix's Python distributions: ``({name: version} owned by conda, {name: PipPackage} not)``.

    The pip ones carry name, version and requirements only (an installed distribution does not
    know the file it came from).
    """
    owned = _conda_owned_dist_infos(prefix)
    conda: dict[str, str] = {}
    pip: dict[str, PipPackage] = {}
    for site in _site_packages_dirs(prefix):
        for dist_info in sorted(site.glob("*.dist-info")):
            meta = _read_metadata(dist_info)
            if meta is None:
                continue
            name, version, requires = meta
            if dist_info.name in owned:
                conda[name] = version
            else:
                pip[name] = PipPackage(name=name, version=version, requires=requires)
    return conda, pip


def _left_to_conda(requirements: Sequence[str], conda: dict[str, str]) -> tuple[list[str], list[str]]:
    """Split the section into (requirements for uv, notes on those conda already satisfies).

    A requirement on a conda-installed distribution that its version does not satisfy is an
    error: installing it with pip would overwrite the conda package's files.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    for_uv: list[str] = []
    notes: list[str] = []
    for text in requirements:
        req = Requirement(text)  # validated by the specification schema
        name = canonicalize_name(req.name)
        if name not in conda or req.marker is not None or req.extras:
            for_uv.append(text)  # uv decides (markers/extras); excluded names stay conda's anyway
        elif req.specifier.contains(conda[name], prereleases=True):
            notes.append(f"  {text}: {name} {conda[name]} is installed by conda")
        else:
            raise InstallError(
                f"pip requirement {text!r} conflicts with {name} {conda[name]} installed by conda; "
                f"change the conda dependency on {name} instead"
            )
    return for_uv, notes


# -- lock, install ----------------------------------------------------------------------------------
def _locked_file(entry: dict, pylock: str) -> tuple[str, str]:
    """(URL, sha256) of the one file uv locked for this interpreter: its wheel, else its sdist."""
    files = [*(entry.get("wheels") or []), *([entry["sdist"]] if isinstance(entry.get("sdist"), dict) else [])]
    for f in files:
        url = f.get("url") or (Path(f["path"]).resolve().as_uri() if f.get("path") else None)
        sha256 = (f.get("hashes") or {}).get("sha256")
        if url and sha256:
            return url, sha256
    raise InstallError(
        f"uv locked {entry.get('name')} {entry.get('version')} without a file URL and sha256 to install ({pylock})"
    )


def parse_pylock(text: str) -> tuple[PipPackage, ...]:
    """The distributions of a PEP 751 ``pylock.toml`` (URLs redacted: they are recorded)."""
    from packaging.utils import canonicalize_name

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InstallError(f"uv wrote an unreadable pylock.toml: {exc}") from exc
    out = []
    for entry in doc.get("packages", []):
        url, sha256 = _locked_file(entry, "pylock.toml")
        out.append(PipPackage(name=canonicalize_name(entry["name"]), version=str(entry["version"]),
                              url=redact_url(url), sha256=sha256))
    return tuple(sorted(out, key=lambda p: p.name))


async def lock_pip(
    prefix: Path, requirements: Sequence[str], settings: BuildSettings, log: BuildLog
) -> tuple[PipPackage, ...]:
    """Resolve the ``pip:`` section for the prefix's interpreter; every file with URL and sha256."""
    python = prefix_python(prefix)
    conda, _ = await asyncio.to_thread(installed_distributions, prefix)
    for_uv, notes = _left_to_conda(requirements, conda)
    for note in notes:
        log.write(note)
    if not for_uv:
        return ()
    log.write("$ uv pip compile --format pylock.toml " + " ".join(for_uv))
    with tempfile.TemporaryDirectory(prefix="conda-store-pip-") as tmp:
        requirements_in = Path(tmp) / "requirements.in"
        requirements_in.write_text("\n".join(for_uv) + "\n")
        args = ["pip", "compile", "--python", str(python), "--format", "pylock.toml", "--no-header",
                *uv_source_arguments(settings)]
        if conda:
            excludes = Path(tmp) / "conda-installed.txt"
            excludes.write_text("\n".join(sorted(conda)) + "\n")
            args += ["--excludes", str(excludes)]
        pylock = await _run_uv([*args, str(requirements_in)], settings, log, _FAILED)
    return parse_pylock(pylock or "")


async def install_locked_pip(
    prefix: Path, packages: Iterable[PipPackage], settings: BuildSettings, log: BuildLog
) -> tuple[PipPackage, ...]:
    """Install exactly ``packages`` (pinned, hash-checked, no dependency resolution) into the prefix.

    Used by the build after :func:`lock_pip` and to reinstall a lockfile's pip entries. Files are
    fetched by name, version and hash through the configured source, not by the recorded URL: the
    recorded one is redacted when the index needs credentials. Returns ``packages`` with their
    ``Requires-Dist`` lines as installed; InstallError if the prefix does not end up with exactly
    these versions.
    """
    packages = tuple(packages)
    if not packages:
        return ()
    python = prefix_python(prefix)
    lines = [p.pin + (f" --hash=sha256:{p.sha256}" if p.sha256 else "") for p in packages]
    log.write("$ uv pip install --no-deps --require-hashes " + " ".join(p.pin for p in packages))
    with tempfile.TemporaryDirectory(prefix="conda-store-pip-") as tmp:
        pinned = Path(tmp) / "requirements.txt"
        pinned.write_text("\n".join(lines) + "\n")
        args = ["pip", "install", "--python", str(python), "--no-deps", *uv_source_arguments(settings)]
        if all(p.sha256 for p in packages):  # a lockfile written before hashes were known has none
            args.append("--require-hashes")
        await _run_uv([*args, "-r", str(pinned)], settings, log, _FAILED)
    _, installed = await asyncio.to_thread(installed_distributions, prefix)
    wrong = [f"{p.pin} (found {installed[p.name].version if p.name in installed else 'nothing'})"
             for p in packages if p.name not in installed or installed[p.name].version != p.version]
    if wrong:
        raise InstallError(f"the pip: section did not install as locked: {', '.join(wrong)}")
    return tuple(
        PipPackage(name=p.name, version=p.version, url=p.url, sha256=p.sha256, requires=installed[p.name].requires)
        for p in packages
    )


async def install_pip(
    prefix: Path, requirements: Sequence[str], settings: BuildSettings, log: BuildLog
) -> tuple[PipPackage, ...]:
    """The pip step of a build: lock the section, then install exactly the lock.

    Conda's distributions were left out of the resolution, so a pip package may want another
    version of one than conda installed; ``uv pip check`` says so in the log (a warning: conda's
    own packages decide, as with conda-lock).
    """
    locked = await lock_pip(prefix, requirements, settings, log)
    installed = await install_locked_pip(prefix, locked, settings, log)
    if installed and await _run_uv(["pip", "check", "--python", str(prefix_python(prefix))], settings, log, None) is None:
        log.write("warning: some pip requirements are not met by the versions conda installed (see above)")
    return installed

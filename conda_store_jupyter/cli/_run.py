"""``conda-store run``: a per-user cache of unpacked builds, safe extraction, and exec.

Cache layout (``$XDG_CACHE_HOME/conda-store``, default ``~/.cache/conda-store``)::

    <server key>/<build id>/<sha256[:16] of the archive>/   the unpacked, relocated prefix
    <server key>/<build id>/<digest>/.conda-store-complete   {"digest", "build_id", "identity", "build_key"}
    <server key>/<build id>/.lock                           serialises installers of one build

An entry counts only if its completion marker exists and names the directory's digest, so a
crash at any point leaves nothing that looks usable. Build ids are not a build's identity: a
server whose database was reset hands out the same ids again. So the marker also records the
build's *identity* (id, environment id, ``scheduled_on``, specification sha256, environment
name: what upstream's build key ``<sha256[:8]>-<ts>-<id>-<name>`` is made of) and an entry is
used only if it agrees with what the server says about the build right now. Installation order matters: conda-unpack
rewrites prefixes to *its own location*, so the archive is extracted into a temporary sibling,
renamed into place, relocated by ``bin/conda-unpack`` and only then marked complete (the marker
is written to a temp file and renamed, so it appears atomically).

This module is on the cached fast path: stdlib only, and only cheap stdlib modules at import
time (tarfile, hashlib and subprocess are imported where an install actually happens).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ._errors import CLIError

TYPE_CHECKING = False  # typing itself costs ~5 ms on the cached `run` path; mypy reads the name
if TYPE_CHECKING:
    from typing import Any, Mapping

MARKER = ".conda-store-complete"


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "conda-store"


def build_dir(server_key: str, build_id: int, root: Path | None = None) -> Path:
    return (root or cache_root()) / server_key / str(int(build_id))


Identity = dict  # str -> JSON value

_REQUIRED = ("build_id", "scheduled_on")
"""Identity fields both sides must have: ids repeat after a reset, scheduling times do not."""


def build_identity(build: Mapping[str, Any], environment: str | None = None) -> Identity:
    """What identifies a build beyond its id, from an API build object (list or detail shape).

    Fields the answer lacks are left out: the environment endpoint's ``current_build`` has no
    specification, and a build detail has no environment name.
    """
    spec = build.get("specification")
    fields = {
        "build_id": int(build["id"]),
        "environment_id": build.get("environment_id"),
        "scheduled_on": build.get("scheduled_on"),
        "sha256": spec.get("sha256") if isinstance(spec, dict) else None,
        "environment": environment,
    }
    return {k: v for k, v in fields.items() if v is not None}


def identity_matches(stored: object, observed: Identity) -> bool:
    """True if a marker's identity and the server's describe the same build.

    The required fields must be present on both sides and equal; every other field is
    compared where both sides know it. A marker without an identity (older CLI) never matches.
    """
    if not isinstance(stored, dict):
        return False
    if any(k not in stored or stored[k] != observed.get(k) for k in _REQUIRED):
        return False
    return all(stored[k] == v for k, v in observed.items() if k in stored)


def build_key(identity: Identity) -> str | None:
    """Upstream's build key ``<sha256[:8]>-<unix ts of scheduled_on>-<id>-<env name>``, if known."""
    if not all(k in identity for k in ("sha256", "scheduled_on", "environment")):
        return None
    import datetime as dt

    # naming imports only the stdlib: the cached-run fast path stays light
    from ..naming import build_key as format_build_key

    when = dt.datetime.fromisoformat(str(identity["scheduled_on"]).replace("Z", "+00:00"))
    return format_build_key(str(identity["sha256"]), when, int(identity["build_id"]), str(identity["environment"]))


def find_cached(
    server_key: str, build_id: int, root: Path | None = None, *, identity: Identity | None = None
) -> Path | None:
    """The unpacked prefix of ``build_id`` if a complete one is cached (a scandir + a read).

    With ``identity`` (what the server says the build is now) only an entry installed from that
    same build counts; ``None`` skips the check and is for tools that inspect the cache only.
    """
    directory = build_dir(server_key, build_id, root)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return None
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            with open(os.path.join(entry.path, MARKER), encoding="utf-8") as fh:
                marker = json.load(fh)
        except (OSError, ValueError):
            continue
        if not isinstance(marker, dict) or not str(marker.get("digest", "")).startswith(entry.name):
            continue
        if identity is None or identity_matches(marker.get("identity"), identity):
            return Path(entry.path)
    return None


def safe_extract(archive: Path, dest: Path) -> None:
    """See :func:`._extract.safe_extract` (kept here for callers of the old location)."""
    from ._extract import safe_extract as extract

    extract(archive, dest)


# --------------------------------------------------------------------------- install


def _write_marker(prefix: Path, digest: str, build_id: int, identity: Identity | None) -> None:
    marker: dict[str, Any] = {"digest": digest, "build_id": build_id}
    if identity is not None:
        marker.update(identity=identity, build_key=build_key(identity))
    tmp = prefix / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(marker), encoding="utf-8")
    os.replace(tmp, prefix / MARKER)


def _relocate(prefix: Path) -> None:
    """Run the archive's ``bin/conda-unpack`` with the environment's own interpreter."""
    import subprocess

    script = prefix / "bin" / "conda-unpack"
    if not script.exists():
        return  # an archive without placeholders (or packed with --dest-prefix) needs nothing
    python = prefix / "bin" / "python"
    cmd = [str(python), str(script)] if python.exists() else [str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CLIError(f"conda-unpack failed for {prefix} (exit {proc.returncode}): {last}")


def install_archive(
    archive: Path, digest: str, build_id: int, directory: Path, identity: Identity | None = None
) -> Path:
    """Turn a downloaded archive into a complete cached prefix; return the prefix.

    ``identity`` (see :func:`build_identity`) goes into the marker; without one the entry is
    never found by a ``run`` that checks identities. The caller holds the build's lock (see
    :func:`build_lock`).
    """
    import shutil
    import tempfile

    final = directory / digest[:16]
    if (final / MARKER).exists():
        # The very same bytes are already unpacked (e.g. under an identity from before a
        # server reset): the content is right, only the marker has to name this build.
        _write_marker(final, digest, build_id, identity)
        return final
    if final.exists():  # an earlier attempt died between rename and marker
        shutil.rmtree(final)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=directory))
    try:
        safe_extract(archive, tmp)  # also verifies every real path before conda-unpack runs
        os.replace(tmp, final)
        _relocate(final)
        _write_marker(final, digest, build_id, identity)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        raise
    return final


class build_lock:
    """An exclusive flock on ``<build dir>/.lock``: one installer per build at a time."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".lock"
        self.fd = -1

    def __enter__(self) -> "build_lock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing releases the lock


# --------------------------------------------------------------------------- exec


def _activation_scripts(prefix: Path) -> list[str]:
    directory = prefix / "etc" / "conda" / "activate.d"
    try:
        return sorted(str(p) for p in directory.iterdir() if p.suffix == ".sh")
    except OSError:
        return []


def activated_environ(prefix: Path, environ: dict[str, str] | None = None, name: str | None = None) -> dict[str, str]:
    """What ``conda activate`` would set for a prefix, minus the shell functions."""
    env = dict(os.environ if environ is None else environ)
    old_prefix = env.get("CONDA_PREFIX")
    path_entries = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p]
    if old_prefix:  # a previously activated env must not shadow this one
        path_entries = [p for p in path_entries if p != os.path.join(old_prefix, "bin")]
    env["PATH"] = os.pathsep.join([str(prefix / "bin"), *path_entries])
    env["CONDA_PREFIX"] = str(prefix)
    env["CONDA_DEFAULT_ENV"] = name or str(prefix)
    env["CONDA_SHLVL"] = "1"
    for var in ("PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__"):
        env.pop(var, None)  # they would point the env's python at another installation
    return env


_HOOK_RUNNER = """\
__csr_n=$1; shift
while [ "$__csr_n" -gt 0 ]; do
    __csr_hook=$1; shift; __csr_n=$((__csr_n - 1))
    . "$__csr_hook" || exit $?
done
unset __csr_n __csr_hook
exec "$@"
"""
"""``sh -c`` script: ``$1`` hooks follow, source each in order, then exec the remaining args."""


def which(program: str, path: str) -> str | None:
    """``shutil.which`` for POSIX (shutil imports bz2/lzma/zlib: ~5 ms of a cached run's 60)."""
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or os.curdir, program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def exec_in_env(prefix: Path, command: list[str], name: str | None = None) -> None:
    """Replace this process with ``command`` inside the environment (never returns).

    Plain ``os.execve``: no wrapper process, so stdin/stdout/signals and the exit code are the
    command's own. Packages with ``etc/conda/activate.d/*.sh`` hooks (e.g. setting
    ``GDAL_DATA``) get them sourced by ``sh``, which then ``exec``s the command.
    """
    env = activated_environ(prefix, name=name)
    argv = list(command) or ["python"]
    hooks = _activation_scripts(prefix)
    if hooks:
        # The hook paths are arguments, never script text: the cache lives under $HOME or
        # $XDG_CACHE_HOME, and a quote or $(...) in that path must not become shell code.
        argv = ["/bin/sh", "-c", _HOOK_RUNNER, "conda-store-run", str(len(hooks)), *hooks, *argv]
    program = argv[0]
    if os.sep not in program:
        found = which(program, env["PATH"])
        if found is None:
            raise CLIError(f"command {program!r} not found in the environment or on PATH", exit_code=127)
        program = found
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(program, argv, env)
    except OSError as exc:
        raise CLIError(f"cannot execute {argv[0]!r}: {exc.strerror}", exit_code=126) from None

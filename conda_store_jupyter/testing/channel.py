"""Build a small, real, local conda channel (and a pip index) for tests, demos and binder.

Why: no public conda channel is reachable where this project is developed and tested, and mocks
would hide exactly the bugs we care about (solving, prefix relocation, package formats). So we
build a real channel from things that are available offline or from PyPI:

* ``python`` (linux-64): a relocatable copy of the running interpreter (see ``_python_pkg``);
  for osx-arm64 a clearly labelled solve-only stand-in;
* pure-Python wheels converted with whl2conda (noarch: python): pip, six, packaging, ...;
* ``ipykernel`` with its whole dependency closure and ``numpy``, binary wheels included, wrapped
  as linux-64 packages for the channel's python by ``_wheel_pkg`` (when we have pins for that
  python: see ``_wheels.KERNEL_WHEELS``), so environments can run real kernels;
* tiny native packages written by our own writer, in both package formats, with prefix
  placeholders, several versions and dependencies: ``libgreet``, ``hello``, ``greet-data``;
* a PEP 503 simple index of pinned wheels, for the ``pip:`` section of environment files.

The channel is built once and cached by its inputs (interpreter, recipe version, wheel pins).
A build goes into a temporary directory beside the target; the target path itself is a symlink
that is swapped atomically, so a concurrent or killed run never exposes half a channel, and an
``fcntl`` lock keeps two processes from building at the same time.

Usage: ``python -m conda_store_jupyter.testing.channel [--without-kernel] DIR`` prints the channel URL last.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ._pkgwriter import PackageFile, PackageFormat, PackageRecipe, write_package
from ._python_pkg import InterpreterSource, relocatable_python, solve_only_python
from ._wheel_pkg import TargetPython, wheel_recipe
from ._wheels import WHEELS, Wheel, convert_wheels, fetch_wheels, kernel_wheels_for, write_simple_index

# Bump whenever anything below changes what ends up in the channel: it is part of the cache key.
RECIPE_VERSION = "3"

MARKER = ".build-key"
BUILD_INFO = "build-info.json"
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"  # conda's traditional placeholder prefix
NATIVE_SUBDIRS = ("linux-64", "osx-arm64")


@dataclass(frozen=True)
class LocalChannel:
    path: Path  # channel root directory (contains linux-64/, noarch/, osx-arm64/ with repodata.json)
    url: str  # "file://..." URL of the channel root
    pypi_index_url: str  # "file://.../simple": PEP 503 simple index of a few pure-python wheels
    pypi_dir: Path  # the directory of those wheels (usable as uv --find-links)


@dataclass(frozen=True)
class BuildReport:
    """What a (non-cached) build produced; written as build-info.json for humans."""

    key: str
    seconds: float
    packages: tuple[str, ...]
    python_source: str


# --------------------------------------------------------------------------------------------
# Package recipes for the native test packages
# --------------------------------------------------------------------------------------------

def _libgreet(version: str, subdir: str) -> PackageRecipe:
    conf = (
        "# libgreet configuration (conda-store-jupyter test fixture).\n"
        "# The installer replaces the prefix below with the environment's prefix.\n"
        f"prefix={PLACEHOLDER}\n"
        f"greeting=greetings from libgreet {version}\n"
    ).encode()
    return PackageRecipe(
        name="libgreet", version=version, build="h0_cs", subdir=subdir,
        files={"etc/libgreet.conf": PackageFile(conf, prefix_placeholder=PLACEHOLDER)},
        summary="Test fixture: a 'library' whose config file holds the install prefix",
    )


def _hello_script(version: str, uses_libgreet: bool) -> bytes:
    # POSIX sh on purpose: it runs on any host, needs no compiler, and still exercises the two
    # things native packages need (executable mode and prefix rewriting inside a text file).
    lines = [
        "#!/bin/sh",
        f"# hello {version}: conda-store-jupyter test fixture. The installer rewrites the prefix.",
        f"prefix='{PLACEHOLDER}'",
    ]
    if uses_libgreet:
        lines += [
            "greeting='no libgreet found'",
            'if [ -r "$prefix/etc/libgreet.conf" ]; then',
            "  while IFS='=' read -r key value; do",
            '    if [ "$key" = greeting ]; then greeting=$value; fi',
            '  done < "$prefix/etc/libgreet.conf"',
            "fi",
            f'echo "hello {version} | $greeting"',
        ]
    else:
        lines.append(f'echo "hello {version}"')
    return ("\n".join(lines) + "\n").encode()


def _hello(version: str, subdir: str, depends: tuple[str, ...]) -> PackageRecipe:
    script = _hello_script(version, uses_libgreet=bool(depends))
    return PackageRecipe(
        name="hello", version=version, build="h0_cs", subdir=subdir, depends=depends,
        files={"bin/hello": PackageFile(script, 0o755, prefix_placeholder=PLACEHOLDER)},
        summary="Test fixture: an executable that prints its version (and libgreet's greeting)",
    )


def _greet_data() -> PackageRecipe:
    data = b"hello\nbonjour\nhallo\nhola\n"
    return PackageRecipe(
        name="greet-data", version="0.1", build="0_cs", subdir="noarch", noarch="generic",
        depends=("hello",), files={"share/greet-data/greetings.txt": PackageFile(data)},
        summary="Test fixture: noarch: generic data package depending on hello",
    )


def native_recipes() -> list[tuple[PackageRecipe, PackageFormat]]:
    """The hand-written packages and the format each is written in (both formats exercised)."""
    out: list[tuple[PackageRecipe, PackageFormat]] = []
    for subdir in NATIVE_SUBDIRS:
        out += [
            (_libgreet("1.0", subdir), "tar.bz2"),
            (_libgreet("1.1", subdir), "conda"),
            (_hello("1.0", subdir, ()), "tar.bz2"),
            (_hello("2.0", subdir, ("libgreet >=1.1",)), "conda"),
        ]
    out.append((_greet_data(), "conda"))
    return out


# --------------------------------------------------------------------------------------------
# Cache key, lock, atomic swap
# --------------------------------------------------------------------------------------------

def _kernel_wheels(kernel: bool = True) -> tuple[Wheel, ...]:
    return kernel_wheels_for(InterpreterSource.current().short) if kernel else ()


def cache_key(wheels: tuple[Wheel, ...] = WHEELS, kernel: bool = True) -> str:
    """Hash of every input that changes the channel's content. Cheap: no file is read."""
    inputs = {
        "python": sys.version,
        "base_prefix": sys.base_prefix,
        "recipe": RECIPE_VERSION,
        "wheels": [[w.filename, w.sha256, w.conda] for w in wheels],
        "kernel_wheels": [[w.filename, w.sha256] for w in _kernel_wheels(kernel)],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _channel_for(directory: Path) -> LocalChannel:
    pypi = directory / "pypi"
    return LocalChannel(
        path=directory,
        url=directory.as_uri(),
        pypi_index_url=(pypi / "simple").as_uri() + "/",
        pypi_dir=pypi / "wheels",
    )


def _is_current(directory: Path, key: str) -> bool:
    try:
        return (directory / MARKER).read_text().strip() == key
    except OSError:
        return False


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed (or the process dies)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _swap_in(directory: Path, built: Path) -> None:
    """Point ``directory`` (a symlink) at ``built`` atomically; remove what it pointed to before."""
    old_target: Path | None = None
    if directory.is_symlink():
        old_target = directory.parent / os.readlink(directory)
    elif directory.exists():
        # A real directory here is either an old layout of ours (has our marker) or empty;
        # anything else is not ours to delete.
        if (directory / MARKER).exists() or not any(directory.iterdir()):
            shutil.rmtree(directory)
        else:
            raise RuntimeError(f"{directory} exists and is not a channel built by this module")
    tmp_link = directory.parent / f".{directory.name}.link-{os.getpid()}"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(built.name)  # relative: the cache directory may be moved as a whole
    os.replace(tmp_link, directory)  # rename(2) over the old symlink is atomic
    if old_target is not None and old_target.resolve() != built.resolve():
        shutil.rmtree(old_target, ignore_errors=True)


def _remove_leftovers(directory: Path, keep: Path) -> None:
    """Delete temp dirs of killed builds and superseded channels. Caller holds the lock."""
    for p in directory.parent.glob(f".{directory.name}-*"):
        if p.is_dir() and not p.is_symlink() and p.name != keep.name:
            shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------

def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # the wheel cache is next door: a hardlink costs nothing
    except OSError:
        shutil.copy2(src, dst)


def _index(channel: Path) -> None:
    import rattler.index

    # Plain repodata.json only: the consumers are rattler and our own server; the .zst and
    # sharded variants would double the index time and the files to keep consistent.
    asyncio.run(rattler.index.index_fs(channel, write_zst=False, write_shards=False, force=True))
    # rattler leaves an empty scratch dir behind; it is not part of a channel.
    scratch = channel / ".tmp"
    if scratch.is_dir() and not any(scratch.iterdir()):
        scratch.rmdir()


def _write_wheel_packages(wheels: dict[str, Path], src: InterpreterSource, root: Path) -> list[Path]:
    """The kernel closure (and numpy) as linux-64 packages for ``src``'s python."""
    target = TargetPython(src.version)
    return [write_package(wheel_recipe(path, target), root, "conda") for _, path in sorted(wheels.items())]


def _build_into(root: Path, wheel_cache: Path, key: str, kernel: bool = True) -> BuildReport:
    """Write the whole channel + pip index into the empty directory ``root``."""
    started = time.monotonic()
    for subdir in ("noarch", *NATIVE_SUBDIRS):
        (root / subdir).mkdir(parents=True, exist_ok=True)

    src = InterpreterSource.current()
    kernel_wheels = _kernel_wheels(kernel)
    with ThreadPoolExecutor(max_workers=2) as pool:
        # Two pip downloads (pure wheels; the kernel's wheels for this interpreter) side by side:
        # on a cold cache they are network-bound.
        kernel_fetch = pool.submit(fetch_wheels, wheel_cache, kernel_wheels, True)
        wheels = fetch_wheels(wheel_cache)
        # whl2conda runs in subprocesses; overlap them with the (CPU-bound) python package.
        converted = pool.submit(
            convert_wheels, [wheels[w.project] for w in WHEELS if w.conda], root / "noarch"
        )
        kernel_pkgs = pool.submit(_write_wheel_packages, kernel_fetch.result(), src, root)
        written = [write_package(relocatable_python(src), root, "conda")]
        written.append(write_package(solve_only_python(src.version, "osx-arm64"), root, "conda"))
        written += [write_package(recipe, root, fmt) for recipe, fmt in native_recipes()]
        written += converted.result()
        written += kernel_pkgs.result()

    _index(root)

    # The pip side lives under pypi/, which the conda indexer ignores (not a platform name);
    # it is indexed after the conda side so it can never be mistaken for a subdir.
    pypi_wheels = root / "pypi" / "wheels"
    pypi_wheels.mkdir(parents=True)
    for w in WHEELS:
        _link_or_copy(wheels[w.project], pypi_wheels / w.filename)
    write_simple_index(pypi_wheels, root / "pypi" / "simple")

    report = BuildReport(
        key=key,
        seconds=round(time.monotonic() - started, 2),
        packages=tuple(sorted(f"{p.parent.name}/{p.name}" for p in written)),
        python_source=str(src.prefix),
    )
    (root / BUILD_INFO).write_text(json.dumps(report.__dict__, indent=2) + "\n")
    (root / MARKER).write_text(key + "\n")  # last: its presence means "complete"
    return report


def build_channel(directory: Path, kernel: bool = True) -> LocalChannel:
    """Build (or reuse) the local test channel at ``directory`` and describe it.

    ``directory`` becomes a symlink to a hidden sibling holding the actual build; its URL stays
    the same across rebuilds. Returns in milliseconds when the cached build matches the inputs.
    ``kernel=False`` leaves out ipykernel's closure and numpy (a channel ~25% cheaper to build, for
    callers that never run kernels, e.g. tests of the build machinery itself).
    """
    directory = Path(directory).absolute()
    key = cache_key(kernel=kernel)
    if _is_current(directory, key):
        return _channel_for(directory)

    with _locked(directory.parent / f".{directory.name}.lock"):
        if _is_current(directory, key):  # another process built it while we waited
            return _channel_for(directory)
        final = directory.parent / f".{directory.name}-{key[:16]}"
        tmp = directory.parent / f".{directory.name}-tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir(parents=True)
        try:
            _build_into(tmp, directory.parent / f"{directory.name}.wheels", key, kernel)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _swap_in(directory, final)
        _remove_leftovers(directory, keep=final)
    return _channel_for(directory)


def cache_root() -> Path:
    """Root of the test/benchmark caches (channel, package cache, tools): ``$CONDA_STORE_TEST_CACHE``
    or ``.cache`` in the checkout. One cache per checkout (and per CI run): the channel is rebuilt
    only when its inputs change."""
    repo = Path(__file__).resolve().parent.parent.parent
    return Path(os.environ.get("CONDA_STORE_TEST_CACHE", repo / ".cache")).resolve()


def install_prefix(channel_url: str, cache_dir: Path, prefix: Path, specs: list[str]) -> Path:
    """Solve and install ``specs`` from ``channel_url`` into ``prefix`` with rattler (no conda-store
    involved: the environment a build would have made)."""
    from rattler import Gateway, MatchSpec, SourceConfig, install, solve

    async def run():
        gateway = Gateway(default_config=SourceConfig(cache_action="no-cache"))
        records = await solve(sources=[channel_url], specs=specs, gateway=gateway,
                              platforms=["linux-64", "noarch"])
        await install(records, target_prefix=str(prefix), cache_dir=str(cache_dir), show_progress=False,
                      requested_specs=[MatchSpec(s)._match_spec for s in specs])  # py-rattler 0.28 bug

    asyncio.run(run())
    return prefix


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    kernel = "--without-kernel" not in args
    args = [a for a in args if a != "--without-kernel"]
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(f"usage: python -m {__spec__.name if __spec__ else 'channel'} [--without-kernel] DIR", file=sys.stderr)
        return 2
    started = time.monotonic()
    channel = build_channel(Path(args[0]), kernel=kernel)
    print(f"# built or reused in {time.monotonic() - started:.2f} s: {channel.path}")
    print(f"pypi index: {channel.pypi_index_url}")
    print(f"pypi wheels: {channel.pypi_dir}")
    print(channel.url)  # last line: scripts do `URL=$(python -m ... DIR | tail -1)`
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

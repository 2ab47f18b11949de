"""Pinned pure-Python wheels: noarch conda packages (via whl2conda) and a PEP 503 pip index.

Why pinned: the channel is cached by its inputs, so the inputs must be exact. Each wheel is named
with its version and sha256; a download that does not match is an error, not a silent change.

Why a local pip index: environment.yaml files may have a ``pip:`` section, and tests must run
offline. The index is plain static files (PEP 503), usable as ``--index-url file://.../simple``
or as ``--find-links <dir>``.
"""

from __future__ import annotations

import hashlib
import html
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel. ``conda`` says whether it is also converted into the conda channel."""

    project: str
    version: str
    filename: str
    sha256: str
    conda: bool

    @property
    def normalized(self) -> str:
        """PEP 503 normalised project name (the simple-index directory name)."""
        return re.sub(r"[-_.]+", "-", self.project).lower()


# All py3-none-any. The last three are deliberately NOT in the conda channel: they are what a
# `pip:` section installs from the local pip index.
WHEELS: tuple[Wheel, ...] = (
    Wheel("pip", "26.3", "pip-26.3-py3-none-any.whl",
          "f3b60b20ffaadd4415ed7957212a38ac63fa4c5fa375bd0f4a797777940fad13", True),
    Wheel("six", "1.17.0", "six-1.17.0-py2.py3-none-any.whl",
          "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274", True),
    Wheel("packaging", "26.3", "packaging-26.3-py3-none-any.whl",
          "d7193f7c8e4e93f444fde0262bf90af30e16fa0ad0ad44cb553c87339b23cd1c", True),
    Wheel("idna", "3.20", "idna-3.20-py3-none-any.whl",
          "ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c", True),
    Wheel("colorama", "0.4.6", "colorama-0.4.6-py2.py3-none-any.whl",
          "4f1d9991f5acc0ca119f9d443620b77f9d6b33703e51011c16baf57afb285fc6", True),
    Wheel("typing_extensions", "4.16.0", "typing_extensions-4.16.0-py3-none-any.whl",
          "481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8", True),
    Wheel("tomli", "2.5.0", "tomli-2.5.0-py3-none-any.whl",
          "32a7b79ac57a2e83670ce329ccf675798bc5a2094783a63676866b70503f2e2b", False),
    Wheel("toolz", "1.2.0", "toolz-1.2.0-py3-none-any.whl",
          "890f820b1cb8152785aaf9386d8707770110809035800985ca65cb24ce1120ef", False),
    Wheel("attrs", "26.1.0", "attrs-26.1.0-py3-none-any.whl",
          "c647aa4a12dfbad9333ca4e71fe62ddc36f4e63b2d260a37a8b83d2f043ac309", False),
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_wheels(cache: Path, wheels: tuple[Wheel, ...] = WHEELS) -> dict[str, Path]:
    """Make sure every pinned wheel is in ``cache`` (downloading the missing ones with pip).

    Returns project -> wheel path. The cache lives outside the channel directory so a channel
    rebuild (e.g. a new interpreter) needs no network.
    """
    cache.mkdir(parents=True, exist_ok=True)
    missing = [w for w in wheels if not (cache / w.filename).exists()]
    if missing:
        # --platform any / --abi none: some projects (tomli) also ship compiled wheels, and pip
        # would prefer those for this interpreter; we want the pure py3-none-any file we pinned.
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--platform", "any", "--implementation", "py", "--abi", "none",
            "--python-version", "3.11", "--disable-pip-version-check", "-q", "-d", str(cache),
            *[f"{w.project}=={w.version}" for w in missing],
        ]
        # Output is captured: pip's config here adds find-links/extra indexes that print noisy
        # warnings; they only matter when the download actually fails.
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"pip download failed:\n{proc.stdout.decode(errors='replace')}")
    result: dict[str, Path] = {}
    for w in wheels:
        path = cache / w.filename
        if not path.exists():
            raise RuntimeError(f"pip download did not produce {w.filename}")
        actual = _sha256(path)
        if actual != w.sha256:
            path.unlink()  # never keep a wheel that does not match its pin
            raise RuntimeError(f"{w.filename}: sha256 {actual} != pinned {w.sha256}")
        result[w.project] = path
    return result


def _whl2conda() -> list[str]:
    exe = Path(sys.executable).parent / "whl2conda"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "whl2conda"]


def convert_wheels(paths: list[Path], noarch_dir: Path) -> list[Path]:
    """Convert pure-Python wheels into noarch: python ``.conda`` packages, concurrently.

    Each conversion is mostly interpreter start-up, so running them side by side roughly
    halves the wall time on two cores.
    """
    noarch_dir.mkdir(parents=True, exist_ok=True)
    # A private staging dir, so the result is exactly what whl2conda wrote (other writers may be
    # filling noarch/ concurrently).
    staging = noarch_dir.parent / ".whl2conda-out"
    staging.mkdir()
    procs = []
    for path in paths:
        cmd = [
            *_whl2conda(), "convert", str(path), "--out-dir", str(staging), "--format", "conda",
            "--quiet", "--overwrite",
            # Our wheel cache may sit inside a project with a pyproject.toml; whl2conda would
            # otherwise read [tool.whl2conda] settings from it. Never fetch the rename table.
            "--ignore-pyproject", "--no-update-stdrenames",
        ]
        procs.append((path, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    failures = []
    for path, proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"{path.name}: exit {proc.returncode}\n{out.decode(errors='replace')}")
    if failures:
        raise RuntimeError("whl2conda failed:\n" + "\n".join(failures))
    converted = []
    for pkg in sorted(staging.glob("*.conda")):
        converted.append(pkg.rename(noarch_dir / pkg.name))
    staging.rmdir()
    return converted


def write_simple_index(wheels_dir: Path, simple_dir: Path, wheels: tuple[Wheel, ...] = WHEELS) -> None:
    """Write a PEP 503 simple index in ``simple_dir`` linking (relatively) to ``wheels_dir``.

    Links are relative so the whole pip directory can be moved (we build in a temp dir and
    rename it into place).
    """
    simple_dir.mkdir(parents=True, exist_ok=True)
    by_project: dict[str, list[Wheel]] = {}
    for w in wheels:
        by_project.setdefault(w.normalized, []).append(w)
    if wheels_dir.parent != simple_dir.parent:
        raise ValueError("wheels_dir and simple_dir must be siblings")
    # From simple/<project>/index.html up to the common parent, then into the wheels dir.
    rel_to_wheels = Path("..") / ".." / wheels_dir.name

    root_links = []
    for name in sorted(by_project):
        root_links.append(f'    <a href="{name}/">{html.escape(name)}</a><br/>')
        links = [
            f'    <a href="{html.escape((rel_to_wheels / w.filename).as_posix())}#sha256={w.sha256}">'
            f"{html.escape(w.filename)}</a><br/>"
            for w in by_project[name]
        ]
        project_dir = simple_dir / name
        project_dir.mkdir(exist_ok=True)
        (project_dir / "index.html").write_text(_page(f"Links for {name}", links))
    (simple_dir / "index.html").write_text(_page("Simple index", root_links))


def _page(title: str, links: list[str]) -> str:
    body = "\n".join(links)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n{body}\n  </body>\n</html>\n"
    )

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


# ipykernel 7.4 with its whole dependency closure for CPython 3.11 on linux-64, plus numpy: the
# versions this project's own .venv runs (numpy: the current release), wrapped by ``_wheel_pkg``
# into linux-64 packages for the channel's python. Binary wheels (cp311 / abi3 manylinux) are
# what pip picks for this interpreter; their bundled libraries use $ORIGIN RUNPATHs.
# six, packaging and typing-extensions of the closure come from WHEELS above (same package names).
# Only used when the channel's python is KERNEL_PYTHON (the pins are per interpreter ABI).
KERNEL_PYTHON = "3.11"
KERNEL_WHEELS: tuple[Wheel, ...] = tuple(Wheel(p, v, f, h, True) for p, v, f, h in (
    ("ipykernel", "7.4.0", "ipykernel-7.4.0-py3-none-any.whl",
     "a6757f790ddc5a6006b813d82da1a9dbb65b3a00f2b6607df776418c6566ec1c"),
    ("asttokens", "3.0.2", "asttokens-3.0.2-py3-none-any.whl",
     "9da13157f5b28becde0bd374fc677dcd3c290614264eff096f167c469cd9f933"),
    ("comm", "0.2.3", "comm-0.2.3-py3-none-any.whl",
     "c615d91d75f7f04f095b30d1c1711babd43bdc6419c1be9886a85f2f4e489417"),
    ("debugpy", "1.8.22", "debugpy-1.8.22-cp311-cp311-manylinux_2_34_x86_64.whl",
     "192b73e8d53bbd60225220c0943627bf249ac93d0ea3090e23c45f3e0ceb6a35"),
    ("executing", "2.3.0", "executing-2.3.0-py3-none-any.whl",
     "736e859c9f8701f11fcf516856f26f562e04776387824b43a35a1dfe21c84122"),
    ("ipython", "9.18.1", "ipython-9.18.1-py3-none-any.whl",
     "997ce9140d374531a61069c70c0f9ef299d6dd3559ea0f94b8af589726e3c1d5"),
    ("ipython_pygments_lexers", "1.1.1", "ipython_pygments_lexers-1.1.1-py3-none-any.whl",
     "a9462224a505ade19a605f71f8fa63c2048833ce50abc86768a0d81d876dc81c"),
    ("jedi", "0.20.1", "jedi-0.20.1-py2.py3-none-any.whl",
     "0fb16d86c4a4c73c37ba518c77419975e30fcc620658a8d14fbb5720cdd34142"),
    ("jupyter_client", "8.10.0", "jupyter_client-8.10.0-py3-none-any.whl",
     "5f73f24f22fa25192cfff6b23c051932a2473a797b05734aff495b392103e14e"),
    ("jupyter_core", "5.9.1", "jupyter_core-5.9.1-py3-none-any.whl",
     "ebf87fdc6073d142e114c72c9e29a9d7ca03fad818c5d300ce2adc1fb0743407"),
    ("matplotlib_inline", "0.2.2", "matplotlib_inline-0.2.2-py3-none-any.whl",
     "3c821cf1c209f59fb2d2d64abbf5b23b67bcb2210d663f9918dd851c6da1fcf6"),
    ("nest_asyncio2", "1.7.4", "nest_asyncio2-1.7.4-py3-none-any.whl",
     "86e77b52c3d1496b294af3c944b44213b9b82a12a5ee590c0acc4ca4692ef6c7"),
    ("numpy", "2.4.6", "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
     "89cd468399cfd2504718f0ba50e410dca55a170b61a02ad92bb18c8a65186e93"),
    ("parso", "0.8.7", "parso-0.8.7-py2.py3-none-any.whl",
     "a8926eb2a1b915486941fdbd31e86a4baf88fe8c210f25f2f35ecec5b574ca1c"),
    ("pexpect", "4.9.0", "pexpect-4.9.0-py2.py3-none-any.whl",
     "7236d1e080e4936be2dc3e326cec0af72acf9212a7e1d060210e70a47e253523"),
    ("platformdirs", "4.14.9", "platformdirs-4.14.9-py3-none-any.whl",
     "d0d3a23e7ff282cfa94b77f5a22b81030dcb68ba0430f90c74f4bd8d090782ea"),
    ("prompt_toolkit", "3.0.53", "prompt_toolkit-3.0.53-py3-none-any.whl",
     "01c0891d7f9237d5e339f7d3e42cdae80b7534abb1c7c0e3352efba6231492f2"),
    ("psutil", "7.2.2",
     "psutil-7.2.2-cp36-abi3-manylinux2010_x86_64.manylinux_2_12_x86_64.manylinux_2_28_x86_64.whl",
     "076a2d2f923fd4821644f5ba89f059523da90dc9014e85f8e45a5774ca5bc6f9"),
    ("ptyprocess", "0.7.0", "ptyprocess-0.7.0-py2.py3-none-any.whl",
     "4b41f3967fce3af57cc7e94b888626c18bf37a083e3651ca8feeb66d492fef35"),
    ("pure_eval", "0.2.4", "pure_eval-0.2.4-py3-none-any.whl",
     "96cae060a313cfaad51bb761278bfb0e62dc0248d9315a81173752dc546cd37a"),
    ("pygments", "2.21.0", "pygments-2.21.0-py3-none-any.whl",
     "2363c69b61c4a97c838da3b130dcd6468f4848992b21a82f2a63ec34377137d9"),
    ("python-dateutil", "2.9.0.post0", "python_dateutil-2.9.0.post0-py2.py3-none-any.whl",
     "a8b2bc7bffae282281c8140a97d3aa9c14da0b136dfe83f850eea9a5f7470427"),
    ("pyzmq", "27.3.0", "pyzmq-27.3.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
     "477b8ad30d66fc905c5388351e83b9ac25824b00e82c0d052b72ea6392636dfd"),
    ("stack_data", "0.6.3", "stack_data-0.6.3-py3-none-any.whl",
     "d5558e0c25a4cb0853cddad3d77da9891a08cb85dd9f9f91b9f8cd66e511e695"),
    ("tornado", "6.6.1",
     "tornado-6.6.1-cp311-abi3-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl",
     "1b6ff57cc69b339f8feb9e7b567b0e0eacb16bfaf234159496623ef7a67ba640"),
    ("traitlets", "5.16.1", "traitlets-5.16.1-py3-none-any.whl",
     "f775618166caa0396c8e337099240f2bd3e5e917d203b2e6fbe21a58d3cb1f6b"),
    ("wcwidth", "0.9.4", "wcwidth-0.9.4-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
     "b185c8b927b23af2721be1783499d1cfa5c028b098b0858951b4ae224477f1c2"),
))


def kernel_wheels_for(python_short: str) -> tuple[Wheel, ...]:
    """The kernel closure's pins for a channel python ``X.Y`` (none when we have no pins for it)."""
    return KERNEL_WHEELS if python_short == KERNEL_PYTHON else ()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_wheels(cache: Path, wheels: tuple[Wheel, ...] = WHEELS, for_host: bool = False) -> dict[str, Path]:
    """Make sure every pinned wheel is in ``cache`` (downloading the missing ones with pip).

    Returns project -> wheel path. The cache lives outside the channel directory so a channel
    rebuild (e.g. a new interpreter) needs no network. ``for_host``: the wheels pip picks for
    this interpreter (binary ones included) instead of pure-Python ones only.
    """
    cache.mkdir(parents=True, exist_ok=True)
    missing = [w for w in wheels if not (cache / w.filename).exists()]
    if missing:
        # --platform any / --abi none: some projects (tomli) also ship compiled wheels, and pip
        # would prefer those for this interpreter; we want the pure py3-none-any file we pinned.
        pure = ["--platform", "any", "--implementation", "py", "--abi", "none", "--python-version", "3.11"]
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            *([] if for_host else pure), "--disable-pip-version-check", "-q", "-d", str(cache),
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

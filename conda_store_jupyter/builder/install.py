"""Install step: link conda packages with py-rattler, then the ``pip:`` section with uv.

Conda packages come from ONE package cache shared by every build on the host, so a package is
downloaded and extracted once and then hard-linked into each prefix (the cache and the store
must share a filesystem for that). The ``pip:`` section is installed by uv into the prefix's own
interpreter; uv's cache lives inside the package cache and its environment is scrubbed so it
neither reads the user's uv/pip configuration nor writes anywhere but the prefix and the cache.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import hashlib
import html.parser
import json
import os
import shutil
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..exceptions import InstallError
from .log import BuildLog
from .records import BuildSettings, InstalledPackage, PipPackage, PlatformSolution
from .solve import read_summary

# Environment variables that would make uv (or the prefix's python, which uv queries) look at
# something other than the prefix and our settings: user uv/pip config, another virtualenv or
# conda env, a PYTHONPATH that injects foreign site-packages.
_SCRUBBED_PREFIXES = ("UV_", "PIP_", "PYTHON", "VIRTUAL_ENV", "CONDA_")


async def install_conda(
    solution: PlatformSolution, prefix: Path, settings: BuildSettings, specs: Sequence[str]
) -> None:
    """Link the solved host records into a new prefix (hardlinks from the shared cache)."""
    from rattler import MatchSpec, install

    try:
        await install(
            list(solution.records),
            target_prefix=prefix,
            cache_dir=settings.package_cache_directory,
            show_progress=False,
            # py-rattler 0.28 forgets to unwrap MatchSpec here; pass the inner objects.
            requested_specs=[MatchSpec(s)._match_spec for s in specs],
        )
    except Exception as exc:  # rattler raises its own (unexported) exception classes
        raise InstallError(f"installing the conda packages failed: {exc}") from exc


def cached_summaries(packages: Iterable[InstalledPackage], settings: BuildSettings) -> tuple[InstalledPackage, ...]:
    """Fill in ``summary`` from the packages' ``info/about.json`` in the package cache.

    rattler extracts each package to ``<cache>/<name>-<version>-<build>`` (repodata has no
    summary); packages not found there keep an empty summary.
    """
    cache = settings.package_cache_directory
    return tuple(p.with_summary(read_summary(cache / f"{p.name}-{p.version}-{p.build}")) for p in packages)


# -- pip via uv ---------------------------------------------------------------------------------
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


def uv_environment(settings: BuildSettings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(
        UV_CACHE_DIR=str(settings.uv_cache_directory),
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
        UV_PYTHON_INSTALL_DIR=str(settings.uv_cache_directory / "python"),
        UV_NO_PROGRESS="1",
        NO_COLOR="1",
    )
    return env


def prefix_python(prefix: Path) -> Path:
    for candidate in (prefix / "bin" / "python", prefix / "python.exe"):
        if candidate.exists():
            return candidate
    raise InstallError(
        "the specification has a pip: section but the environment has no python; add python to its dependencies"
    )


def uv_command(prefix: Path, requirements: Sequence[str], settings: BuildSettings) -> list[str]:
    cmd = [uv_executable(), "pip", "install", "--python", str(prefix_python(prefix)), "--no-config"]
    if settings.pip_index_url:
        cmd += ["--default-index", settings.pip_index_url]
    elif settings.pip_find_links:
        cmd.append("--no-index")  # only the configured wheel directories, never an implicit PyPI
    for link in settings.pip_find_links:
        cmd += ["--find-links", link]
    return [*cmd, "--", *requirements]


async def install_pip(
    prefix: Path, requirements: Sequence[str], settings: BuildSettings, log: BuildLog
) -> None:
    """``uv pip install`` the ``pip:`` section into the prefix; its output goes into the log.

    Runs as a subprocess so that a cancelled/timed-out build can kill it (see ``finally``).
    """
    cmd = uv_command(prefix, requirements, settings)
    settings.uv_cache_directory.mkdir(parents=True, exist_ok=True)
    log.write("$ uv pip install " + " ".join(requirements))
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=uv_environment(settings),
        cwd=str(prefix),
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            lines.append(line)
            log.write(line)
        rc = await proc.wait()
    finally:
        if proc.returncode is None:  # cancelled (timeout): do not leave uv running
            proc.kill()
            await proc.wait()
    if rc != 0:
        # uv's own explanation (e.g. "Because tomli was not found in the package registry ...")
        detail = " ".join(line.strip() for line in lines if line.strip() and not line.startswith("Using "))
        raise InstallError(f"installing the pip: section failed: {detail or f'uv exited with {rc}'}")


def conda_owned_dist_infos(prefix: Path) -> set[str]:
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


def site_packages_dirs(prefix: Path) -> list[Path]:
    return sorted(prefix.glob("lib/python*/site-packages")) + [p for p in [prefix / "Lib" / "site-packages"] if p.is_dir()]


def _read_metadata(dist_info: Path) -> tuple[str, str, tuple[str, ...]] | None:
    try:
        text = (dist_info / "METADATA").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    msg = email.parser.HeaderParser().parsestr(text)
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        return None
    return name, version, tuple(msg.get_all("Requires-Dist") or ())


def _wheel_tags(dist_info: Path) -> frozenset[str]:
    try:
        text = (dist_info / "WHEEL").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    return frozenset(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:"))


def _direct_url(dist_info: Path) -> str | None:
    try:
        data = json.loads((dist_info / "direct_url.json").read_text())
    except (OSError, ValueError):
        return None
    return data.get("url") if isinstance(data, dict) else None


def read_pip_packages(prefix: Path, settings: BuildSettings) -> tuple[PipPackage, ...]:
    """Distributions in the prefix that conda did not install, with url/sha256 where knowable."""
    from packaging.utils import canonicalize_name

    owned = conda_owned_dist_infos(prefix)
    out: dict[str, PipPackage] = {}
    for site in site_packages_dirs(prefix):
        for dist_info in site.glob("*.dist-info"):
            if dist_info.name in owned:
                continue
            meta = _read_metadata(dist_info)
            if meta is None:
                continue
            name, version, requires = meta
            name = canonicalize_name(name)
            url, sha256 = _direct_url(dist_info), None
            if url is None:
                url, sha256 = locate_distribution(name, version, _wheel_tags(dist_info), settings)
            out[name] = PipPackage(name=name, version=version, url=url, sha256=sha256, requires=requires)
    return tuple(out[k] for k in sorted(out))


# -- where did a pip package come from? ---------------------------------------------------------
# uv does not report the file it installed, but the lockfile wants its URL and sha256. The
# installed ``*.dist-info`` tells us name, version and the wheel's tags; the index the build used
# lists the files of that version (PEP 503 HTML or PEP 691 JSON, usually with ``#sha256=``), so
# the one whose tags match is the one uv picked. For local files without a published hash we hash
# the file itself. If nothing matches (index gone, wheel built from a VCS URL...) the package is
# recorded by name and version only.

class _Anchors(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def _local_path(url: str) -> Path | None:
    if url.startswith("file:"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if "://" not in url:
        return Path(url)
    return None


def _links(page_url: str) -> Iterator[tuple[str, str | None]]:
    """(file URL, sha256 or None) for every file listed at an index page or find-links location."""
    local = _local_path(page_url)
    if local is not None:
        if local.is_dir() and not (local / "index.html").is_file():
            for f in sorted(local.iterdir()):
                yield f.as_uri(), None
            return
        page = local / "index.html" if local.is_dir() else local
        try:
            body, content_type = page.read_text(encoding="utf-8", errors="replace"), "text/html"
        except OSError:
            return
    else:
        # urllib cannot take credentials inside the URL (``user:pw@host`` reads as a port): send
        # them as Basic auth instead; the URLs we yield (and record) carry none.
        parts = urllib.parse.urlsplit(page_url)
        headers = {"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
        if parts.username is not None:
            userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
            page_url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        try:
            req = urllib.request.Request(page_url, headers=headers)
            with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310 - configured index
                body = resp.read().decode("utf-8", "replace")
                content_type = resp.headers.get("Content-Type", "")
        except (OSError, ValueError):  # unreachable, or a URL urllib rejects: no source to record
            return
    if "json" in content_type:
        try:
            files = json.loads(body).get("files", [])
        except ValueError:
            return
        for f in files:
            if isinstance(f, dict) and f.get("url"):
                yield urllib.parse.urljoin(page_url, f["url"]), (f.get("hashes") or {}).get("sha256")
        return
    parser = _Anchors()
    parser.feed(body)
    for href in parser.hrefs:
        url, _, fragment = urllib.parse.urljoin(page_url, href).partition("#")
        digest = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
        yield url, digest


def _matches(url: str, name: str, version: str, tags: frozenset[str]) -> int:
    """2 = wheel with one of the installed tags, 1 = sdist of that version, 0 = no match."""
    from packaging.utils import (
        InvalidSdistFilename,
        InvalidWheelFilename,
        canonicalize_name,
        parse_sdist_filename,
        parse_wheel_filename,
    )
    from packaging.version import InvalidVersion, Version

    filename = urllib.parse.unquote(url.rsplit("/", 1)[-1])
    try:
        if filename.endswith(".whl"):
            n, v, _, file_tags = parse_wheel_filename(filename)
            ok = canonicalize_name(n) == name and v == Version(version)
            return 2 if ok and (not tags or {str(t) for t in file_tags} & tags) else 0
        n, v = parse_sdist_filename(filename)
        return 1 if canonicalize_name(n) == name and v == Version(version) else 0
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return 0


def _file_sha256(url: str) -> str | None:
    path = _local_path(url)
    if path is None or not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def locate_distribution(
    name: str, version: str, tags: frozenset[str], settings: BuildSettings
) -> tuple[str | None, str | None]:
    """(url, sha256) of the file uv most likely installed for ``name==version``, else (None, None)."""
    pages: list[str] = []
    if settings.pip_index_url:
        pages.append(settings.pip_index_url.rstrip("/") + f"/{name}/")
    pages.extend(settings.pip_find_links)
    best: tuple[int, str, str | None] = (0, "", None)
    for page in pages:
        for url, digest in _links(page):
            score = _matches(url, name, version, tags)
            if score > best[0]:
                best = (score, url, digest)
        if best[0] == 2:
            break
    score, url, digest = best
    if not score:
        return None, None
    return url, digest or _file_sha256(url)

"""The remote case: a build this server cannot see on disk, fetched as its conda-pack archive into
the SAME per-user cache ``conda-store run`` uses (:mod:`conda_store_jupyter.cli._run`).

Reused from there, not duplicated: the cache layout, the identity check (an entry is used only
if it was installed from this very build), the per-build lock and the install (safe extraction
into a temp sibling, rename, ``conda-unpack``, then an atomically written completion marker), so
a half-unpacked environment is never run, and a kernel and ``conda-store run`` share entries.

Blocking (flock, tar, conda-unpack), so the provisioner runs :func:`ensure_unpacked` in a
thread. The archive is an artifact that may be produced after the build completes: a ``202`` or
``409`` with ``Retry-After`` means "pending", waited for up to ``wait`` seconds.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import httpx

from ...cli import _run
from ...cli._config import Config

log = logging.getLogger("conda_store_jupyter.kernels")

PENDING = (202, 409, 425, 503)
"""Answers meaning "the archive is not ready yet" (with ``Retry-After``)."""


class ArchiveError(Exception):
    """The archive could not be had; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    """How to reach the service (the extension's target)."""

    url: str
    headers: Mapping[str, str]
    verify_ssl: bool = True

    @property
    def cache_key(self) -> str:
        return Config(url=self.url).cache_key  # the CLI's key: same service, same entries


def find(source: Source, build_id: int, identity: dict, root: Path | None = None) -> Path | None:
    return _run.find_cached(source.cache_key, build_id, root, identity=identity)


def ensure_unpacked(source: Source, build_id: int, identity: dict, *, wait: float = 300.0,
                    root: Path | None = None) -> tuple[Path, bool]:
    """The cached prefix of ``build_id`` (``(prefix, downloaded)``), fetching it once if needed."""
    cached = find(source, build_id, identity, root)
    if cached is not None:
        return cached, False
    directory = _run.build_dir(source.cache_key, build_id, root)
    with _run.build_lock(directory):
        cached = find(source, build_id, identity, root)  # another kernel or `conda-store run` won
        if cached is not None:
            return cached, False
        archive = directory / f".download-{time.time_ns()}.tar.gz"
        try:
            began = time.monotonic()
            digest = download(source, build_id, archive, wait=wait)
            fetched = time.monotonic()
            prefix = _run.install_archive(archive, digest, build_id, directory, identity)
            log.info("conda-store: build %s fetched (%.1f MB, %.1f s) and unpacked into %s (%.1f s)", build_id,
                     archive.stat().st_size / 1e6, fetched - began, prefix, time.monotonic() - fetched)
            return prefix, True
        finally:
            archive.unlink(missing_ok=True)


def download(source: Source, build_id: int, dest: Path, *, wait: float = 300.0) -> str:
    """Stream the build's archive to ``dest``; return its sha256.

    Redirects are followed by hand: to another origin (presigned storage URL) without our
    credential, which must never leave for a host other than the service.
    """
    url = f"{source.url}/api/v1/build/{int(build_id)}/archive/"
    origin = httpx.URL(source.url)
    deadline = time.monotonic() + wait
    redirects = 0
    with httpx.Client(verify=source.verify_ssl, timeout=httpx.Timeout(60.0, read=300.0),
                      follow_redirects=False) as client:
        while True:
            target = httpx.URL(url)
            same = (target.scheme, target.host, target.port) == (origin.scheme, origin.host, origin.port)
            headers = dict(source.headers) if same else {}
            try:
                with client.stream("GET", url, headers=headers) as resp:
                    if resp.status_code in (301, 302, 303, 307, 308) and redirects < 6:
                        redirects += 1
                        url = str(resp.url.join(resp.headers["location"]))
                        continue
                    if resp.status_code in PENDING:
                        resp.read()
                        delay = _retry_after(resp.headers.get("retry-after"))
                        if time.monotonic() + delay > deadline:
                            raise ArchiveError(
                                f"the conda-pack archive of build {build_id} is still being made after "
                                f"{wait:g} s; restart the kernel in a while")
                        time.sleep(delay)  # in a worker thread, never the server's event loop
                        url, redirects = f"{source.url}/api/v1/build/{int(build_id)}/archive/", 0
                        continue
                    if resp.status_code >= 300:
                        resp.read()
                        raise ArchiveError(_refused(build_id, resp))
                    digest = hashlib.sha256()
                    tmp = dest.with_name(dest.name + ".part")
                    with open(tmp, "wb") as fh:
                        for chunk in resp.iter_bytes(1 << 20):
                            fh.write(chunk)
                            digest.update(chunk)
                    tmp.replace(dest)
                    return digest.hexdigest()
            except httpx.HTTPError as exc:
                raise ArchiveError(f"downloading the archive of build {build_id} from {source.url} failed: "
                                   f"{type(exc).__name__}: {exc}") from None


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or 2.0), 0.5), 30.0)
    except ValueError:
        return 2.0


def _refused(build_id: int, resp: httpx.Response) -> str:
    try:
        message = resp.json().get("message") or ""
    except ValueError:
        message = resp.text[:200]
    if resp.status_code == 404:
        return (f"build {build_id} has no conda-pack archive on the service ({message or 'not found'}); "
                "ask an administrator to add CONDA_PACK to c.CondaStore.build_artifacts, or use this "
                "kernel on a server that sees the store's files")
    if resp.status_code == 410:
        return (f"making the conda-pack archive of build {build_id} failed ({message or 'no reason given'}); "
                "rebuild the environment, or ask an administrator to look at the build's artifacts")
    return f"the service refused the archive of build {build_id}: HTTP {resp.status_code} {message}".strip()


__all__ = ["ArchiveError", "Source", "download", "ensure_unpacked", "find"]

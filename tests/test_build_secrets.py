"""A channel URL carrying a token never reaches the lockfile, pinned YAML, log or database.

The local channel is served over real HTTP behind an anaconda.org-style ``/t/<token>/`` path;
the build must use the secret URL and record only the redacted one, and a reinstall from the
lockfile must still find every package through the configured (secret) channel.
"""

from __future__ import annotations

import asyncio
import subprocess
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from conda_store_jupyter.builder.lockfile import read_lockfile, records_from_lockfile
from conda_store_jupyter.builder.log import BuildLog
from conda_store_jupyter.builder.pipeline import run_pipeline
from conda_store_jupyter.builder.records import (
    BuildPaths,
    BuildSettings,
    current_platform,
)
from conda_store_jupyter.exceptions import BuildError
from conda_store_jupyter.schema import parse_specification

from .httpd import serving

TOKEN = "tk-5ecret-0123456789"

pytestmark = pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64")


class _TokenChannel(SimpleHTTPRequestHandler):
    """Serves the channel directory only under /t/<TOKEN>/ch/ (anything else: 403)."""

    def translate_path(self, path: str) -> str:
        prefix = f"/t/{TOKEN}/ch/"
        if not path.startswith(prefix):
            return str(Path(self.directory) / "__not-served__")
        return super().translate_path("/" + path[len(prefix):])

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def secret_channel(local_channel):
    with serving(_TokenChannel, Path(local_channel.path).resolve()) as port:
        yield f"http://127.0.0.1:{port}/t/{TOKEN}/ch"


def test_token_is_redacted_everywhere_and_lockfile_reinstalls(secret_channel, package_cache_dir, tmp_path):
    settings = BuildSettings(channels=(secret_channel,), package_cache_directory=package_cache_dir, timeout=300)
    paths = BuildPaths.in_directory(tmp_path / "out")
    lines: list[str] = []
    with BuildLog(paths.log, sink=lines.append) as log:
        result = run_pipeline(parse_specification("name: secret\ndependencies: [hello >=2]"), settings, paths, log)

    for artifact in (paths.lockfile, paths.yaml, paths.log):
        text = artifact.read_text()
        assert TOKEN not in text, artifact
        assert "/t/***/ch" in text, artifact
    assert not any(TOKEN in line for line in lines)  # the live stream too
    assert all(TOKEN not in p.url and TOKEN not in p.channel for p in result.packages)  # what the DB records

    locked = read_lockfile(paths.lockfile)
    records = asyncio.run(records_from_lockfile(locked, settings))
    prefix = tmp_path / "again"
    from rattler import install

    asyncio.run(install(list(records), target_prefix=prefix, cache_dir=package_cache_dir, show_progress=False))
    out = subprocess.run([prefix / "bin" / "hello"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("hello 2.0")


def test_failure_reason_is_redacted(secret_channel, package_cache_dir, tmp_path):
    """A channel that cannot be fetched: the error names the URL, without the token."""
    broken = secret_channel.replace("/ch", "/missing")
    settings = BuildSettings(channels=(broken,), package_cache_directory=package_cache_dir, timeout=300)
    paths = BuildPaths.in_directory(tmp_path / "out")
    with BuildLog(paths.log) as log, pytest.raises(BuildError) as err:
        run_pipeline(parse_specification("name: secret\ndependencies: [hello]"), settings, paths, log)
    assert "/t/***/missing" in str(err.value)
    assert TOKEN not in str(err.value)
    assert TOKEN not in paths.log.read_text()


class _BasicAuthIndex(SimpleHTTPRequestHandler):
    """A PEP 503 index that answers only with HTTP Basic credentials pip-user:PASSWORD."""

    def do_GET(self) -> None:
        import base64

        expected = "Basic " + base64.b64encode(f"pip-user:{TOKEN}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="index"')
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def secret_index(local_channel):
    root = Path(local_channel.pypi_index_url.removeprefix("file://")).parent  # serves simple/ and the wheels
    with serving(_BasicAuthIndex, root) as port:
        yield f"http://pip-user:{TOKEN}@127.0.0.1:{port}/simple/"


def test_pip_index_with_credentials(local_channel, secret_index, package_cache_dir, tmp_path):
    """Credentials in pip_index_url work for uv and for locating the installed wheel's URL,
    and are recorded nowhere."""
    settings = BuildSettings(channels=(local_channel.url,), package_cache_directory=package_cache_dir,
                             pip_index_url=secret_index, timeout=300)
    paths = BuildPaths.in_directory(tmp_path / "out")
    with BuildLog(paths.log) as log:
        result = run_pipeline(parse_specification(
            "name: secret\ndependencies: [python, {pip: [tomli]}]"), settings, paths, log)
    [tomli] = [p for p in result.pip_packages if p.name == "tomli"]
    assert tomli.sha256 and tomli.url and "tomli" in tomli.url  # located through the authenticated index
    for artifact in (paths.lockfile, paths.yaml, paths.log):
        assert TOKEN not in artifact.read_text(), artifact

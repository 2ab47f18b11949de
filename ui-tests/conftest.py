"""Browser tests of the service page: Playwright (Python) driving Debian's Chromium, headless.

Never ``playwright install``: the browser is ``/usr/bin/chromium`` (scripts/bootstrap installs it).
Screenshots of every page, light and dark, go to ``ui-tests/screenshots/`` (gitignored).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conda_store_jupyter.server import pages
from conda_store_jupyter.testing.config import local_channel_traits, write_config
from tests.conftest import local_channel, package_cache_dir  # noqa: F401 - shared session fixtures
from tests.processes import free_port, stop_process, wait_for

CHROMIUM = os.environ.get("CONDA_STORE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]
SCREENSHOTS = Path(__file__).parent / "screenshots"
BIN = Path(sys.executable).parent

ADMIN_TOKEN = "ui-tests-admin-token-0123456789abcdef"
PASSWORD = "ui-tests-password"


@dataclass
class Standalone:
    url: str  # with the prefix and a trailing slash
    log: Path
    password: str = PASSWORD  # every user's (DummyAuthenticator)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/bootstrap (apt-get install chromium)")
    if pages.load_bundle() is None:
        pytest.fail("the page bundle is not built: run scripts/bootstrap (npm ci && npm run build)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def standalone(tmp_path_factory, local_channel, package_cache_dir):  # noqa: F811
    """A real ``conda-store-server --standalone`` (own redis-server, one worker, SQLite) with
    password login for everyone (DummyAuthenticator) and an admin token."""
    tmp = tmp_path_factory.mktemp("ui-standalone")
    config = write_config(
        tmp / "conda_store_config.py",
        {"store_directory": str(tmp / "store"), **local_channel_traits(local_channel, package_cache_dir),
         "conda_solve_platforms": ["linux-64"], "build_artifacts": ["LOCKFILE", "YAML"]},
        AuthenticationBackend={
            "authenticator_class": "conda_store_jupyter.auth.backend.DummyAuthenticator",
            "predefined_tokens": {ADMIN_TOKEN: {"primary_namespace": "admin", "role_bindings": {"*/*": ["admin"]},
                                                "username": "admin"}},
        },
        DummyAuthenticator={"password": PASSWORD},
    )
    port = free_port()
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "conda-store-server"), "--standalone", f"--config={config}", f"--port={port}", "--workers=1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: httpx.get(f"{url}api/v1/", timeout=2).status_code == 200, 180, "conda-store-server to answer",
                 0.3, proc=proc, log=log, ignore=httpx.HTTPError)
        yield Standalone(url=url, log=log)
    finally:
        stop_process(proc, group=True)


@pytest.fixture(scope="session")
def screenshots():
    """``shoot(page, name)``: save ``<name>-light.png`` and ``<name>-dark.png`` of the full page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # each run overwrites its own pictures

    def shoot(page, name: str) -> None:
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{scheme}.png"), full_page=True)
        page.emulate_media(color_scheme="light")

    return shoot


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies); fails the test on any console or page error."""
    context = browser.new_context(viewport={"width": 1200, "height": 800}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    # A CSP violation or a React error shows up here; the browser's own line for a 4xx answer
    # that the UI shows on purpose ("Failed to load resource: ... status of 4xx") does not count.
    assert not [e for e in errors if "status of 4" not in e], errors

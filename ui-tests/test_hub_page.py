"""The service page through a real JupyterHub 6.1 + configurable-http-proxy, our server being a
hub-managed service (the ``hub`` fixture of tests/test_hub.py, here with a build worker):
alice logs in at the hub → Services → conda-store, with no second password (Hub OAuth) → creates
an environment → its build streams and completes; bob cannot open alice's environment."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from conda_store_jupyter.builder.records import current_platform
from tests.test_hub import chp, hub  # noqa: F401 - the real hub fixtures

pytestmark = pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64")

HUB_SERVICE_WORKERS = 1  # read by the hub fixture: this module builds
BUILD_TIMEOUT_MS = 300_000


def hub_login(page, public_url: str, user: str) -> None:
    page.goto(f"{public_url}/hub/login")
    page.locator("#username_input").fill(user)
    page.locator("#password_input").fill("any")
    page.locator("#login_submit").click()
    page.wait_for_url(re.compile(r"/hub/(spawn|home|user)"))


def test_hub_services_menu_oauth_and_isolation(hub, browser, screenshots):  # noqa: F811
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        page = context.new_page()
        hub_login(page, hub.public_url, "alice")
        page.goto(f"{hub.public_url}/hub/home")
        page.get_by_role("button", name="Services").click()
        page.get_by_role("link", name="conda-store").click()
        # Hub OAuth happens by itself: the hub session is enough, no second login form.
        expect(page.get_by_role("heading", name="Environments")).to_be_visible(timeout=30_000)
        assert page.url.startswith(f"{hub.service_url}/")
        expect(page.get_by_role("link", name="User alice")).to_be_visible()
        screenshots(page, "hub-home")

        page.get_by_role("link", name="New environment").first.click()
        editor = page.get_by_label("environment.yaml")
        editor.fill("name: hubpage\ndependencies:\n  - python 3.11.*\n")
        expect(page.get_by_test_id("validation")).to_contain_text("Valid: creates or updates alice/hubpage")
        page.get_by_role("button", name="Create and build").click()
        expect(page).to_have_url(re.compile(r"/services/conda-store/build/\d+/$"))
        build_url = page.url
        expect(page.get_by_test_id("build-status")).to_have_text("COMPLETED", timeout=BUILD_TIMEOUT_MS)
        expect(page.get_by_test_id("build-log")).to_contain_text("BUILD COMPLETED")
        screenshots(page, "hub-build")
    finally:
        context.close()

    other = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        bob = other.new_page()
        hub_login(bob, hub.public_url, "bob")
        # Typing the URL of alice's environment: OAuth first, then back to that very page.
        bob.goto(f"{hub.service_url}/environment/alice/hubpage/")
        expect(bob.get_by_role("alert")).to_have_text(
            "request not authorized: environment::read on 'alice/hubpage' is not allowed", timeout=30_000)
        assert bob.url == f"{hub.service_url}/environment/alice/hubpage/"
        screenshots(bob, "hub-forbidden")
        bob.get_by_role("link", name="Environments").first.click()
        expect(bob.get_by_text("No environments yet")).to_be_visible()
        bob.goto(build_url)
        expect(bob.get_by_role("alert")).to_contain_text("is not allowed")
    finally:
        other.close()

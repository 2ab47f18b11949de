"""Standalone without password login: the page asks for a token; namespaces in the browser.

An in-process server (``running_server``: real tornado, real HTTP, real Redis) is enough here:
nothing is built.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from traitlets.config import Config

from conda_store_jupyter.server.testing import running_server
from tests.fixtures_service import redis_server_url, redis_url  # noqa: F401 - real redis-server fixtures

ADMIN = "ui-token-login-admin-0123456789abcdef"


@pytest.fixture
def server(tmp_path, redis_url):  # noqa: F811
    c = Config()
    c.CondaStore.store_directory = str(tmp_path / "store")
    c.CondaStore.redis_url = redis_url
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "ops", "role_bindings": {"*/*": ["admin"]}, "username": "ops"}}
    with running_server(c) as s:
        yield s


def test_paste_a_token_then_manage_namespaces(server, page, screenshots):
    page.goto(server.url + "namespaces/")
    token = page.get_by_label("API token")
    token.fill("cst_wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid token: this server does not know it")
    screenshots(page, "login-token")
    token.fill(ADMIN)
    page.get_by_role("button", name="Log in").click()
    # Back to the page that asked for the login.
    expect(page.get_by_role("heading", name="Namespaces")).to_be_visible()
    assert page.url == server.url + "namespaces/"

    page.get_by_label("New namespace").fill("Bad Name")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("alert")).to_contain_text("'Bad Name'")
    page.get_by_label("New namespace").fill("team")
    page.get_by_role("button", name="Create").click()
    table = page.get_by_role("table", name="Namespaces")
    expect(table).to_contain_text("team")
    page.get_by_role("button", name="Delete namespace team").click()
    dialog = page.get_by_role("dialog", name="Delete namespace team?")
    expect(dialog.get_by_role("button", name="Delete namespace")).to_be_disabled()
    dialog.get_by_label("Type team to confirm").fill("team")
    dialog.get_by_role("button", name="Delete namespace").click()
    expect(table.get_by_role("link", name="team", exact=True)).to_have_count(0)

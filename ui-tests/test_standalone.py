"""The standalone page end to end, in Chromium, against a real ``conda-store-server --standalone``:
password login → home → create by uploading an environment.yaml (an invalid one first) → the
build page streams the log live → COMPLETED → download the lockfile → edit → rebuild → set the
older build current → home shows it; bob neither sees nor can open alice's environment."""

from __future__ import annotations

import re

import httpx

import pytest
from playwright.sync_api import expect

from conda_store_jupyter.builder.records import current_platform
from conftest import ADMIN_TOKEN
from tests.processes import wait_for

pytestmark = pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64")

BUILD_TIMEOUT_MS = 300_000  # a loaded 2-core machine; a build of the local channel takes seconds alone
SPEC = "name: analysis\ndescription: from a file\ndependencies:\n  - python 3.11.*\n  - hello\n"
INVALID = "name: analysis\ndependencies: [python\n"


def login(page, standalone, username: str) -> None:
    page.goto(standalone.url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(standalone.password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Environments")).to_be_visible()


def wait_completed(page) -> None:
    expect(page.get_by_test_id("build-status")).to_have_text("COMPLETED", timeout=BUILD_TIMEOUT_MS)


def test_standalone_flow(standalone, page, browser, screenshots, tmp_path):
    url = standalone.url
    # -- login (password form: the server has password login configured)
    page.goto(url)
    expect(page.get_by_role("heading", name="Log in to conda-store")).to_be_visible()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid username or password", ignore_case=True)
    screenshots(page, "login")
    page.get_by_label("Password").fill(standalone.password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Environments")).to_be_visible()
    expect(page.get_by_text("No environments yet")).to_be_visible()

    # -- create: an invalid file shows the exact place; uploading a valid file fixes it
    page.get_by_role("link", name="New environment").first.click()
    editor = page.get_by_label("environment.yaml")
    editor.fill(INVALID)
    problem = page.get_by_test_id("validation")
    expect(problem).to_contain_text("Line 3, column 1", timeout=10_000)
    expect(problem).to_contain_text("invalid YAML at line 3, column 1")
    expect(editor).to_have_attribute("aria-invalid", "true")
    screenshots(page, "create-invalid")
    spec_file = tmp_path / "environment.yaml"
    spec_file.write_text(SPEC)
    page.get_by_label("Upload a file…").set_input_files(str(spec_file))
    expect(editor).to_have_value(SPEC)
    expect(problem).to_contain_text("Valid: creates or updates alice/analysis", timeout=10_000)
    screenshots(page, "create")
    page.get_by_role("button", name="Create and build").click()

    # -- build page: the log streams live, then COMPLETED
    expect(page).to_have_url(re.compile(r"/build/\d+/$"))
    first_build = int(page.url.rstrip("/").rsplit("/", 1)[1])
    log = page.get_by_test_id("build-log")
    expect(page.get_by_test_id("log-state")).to_have_text("Streaming live…")
    expect(log).not_to_be_empty(timeout=BUILD_TIMEOUT_MS)
    wait_completed(page)
    expect(page.get_by_test_id("log-state")).to_contain_text("lines")
    expect(page.get_by_role("list", name="Build steps")).to_contain_text("solve")
    expect(page.get_by_label("Run a command in it")).to_have_value("conda-store run alice/analysis -- python")
    expect(page.get_by_label("Pull the image")).to_have_value(re.compile(r"^docker pull 127\.0\.0\.1:\d+/alice/analysis:\S+$"))
    screenshots(page, "build")

    # -- download the lockfile
    with page.expect_download() as download:
        page.get_by_role("link", name="Lockfile (conda-lock.yml)").click()
    lockfile = tmp_path / "conda-lock.yml"
    download.value.save_as(lockfile)
    text = lockfile.read_text()
    assert "package:" in text and "name: hello" in text, text[:500]

    # -- edit the spec → a new build; set the first build current again
    page.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name="alice/analysis").click()
    expect(page.get_by_role("heading", name="alice/analysis")).to_be_visible()
    page.get_by_role("link", name="Edit").click()
    editor = page.get_by_label("environment.yaml")
    expect(editor).to_have_value(re.compile(r"- hello"))
    editor.fill(SPEC.replace("  - hello\n", "  - hello\n  - six\n").replace("from a file", "edited"))
    expect(page.get_by_test_id("validation")).to_contain_text("Valid", timeout=10_000)
    page.get_by_role("button", name="Save and build").click()
    expect(page).to_have_url(re.compile(r"/build/\d+/$"))
    second_build = int(page.url.rstrip("/").rsplit("/", 1)[1])
    assert second_build != first_build
    wait_completed(page)
    page.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name="alice/analysis").click()
    rows = page.get_by_role("table", name="Builds")
    expect(rows.locator(f'tr[data-build="{second_build}"]')).to_have_attribute("aria-current", "true")
    screenshots(page, "environment")
    page.get_by_role("button", name=f"Set build {first_build} as current").click()
    expect(rows.locator(f'tr[data-build="{first_build}"]')).to_have_attribute("aria-current", "true")
    page.get_by_role("link", name="Environments").first.click()
    row = page.locator('tr[data-environment="alice/analysis"]')
    expect(row.get_by_role("link", name=f"build {first_build} of alice/analysis")).to_be_visible()
    expect(row).to_contain_text("COMPLETED")
    expect(row.get_by_role("link", name="lockfile of alice/analysis")).to_have_attribute(
        "href", f"/api/v1/build/{first_build}/lockfile/?format=yaml")
    expect(row.get_by_role("link", name="archive of alice/analysis")).to_have_count(0)  # not configured here
    screenshots(page, "home")

    # -- user page and namespaces
    page.get_by_role("link", name="User alice").click()
    expect(page.get_by_role("heading", name="alice")).to_be_visible()
    page.get_by_label("Note").fill("ci")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_label("Your new token (shown only once: copy it now)")).to_have_value(re.compile(r"^\S{20,}$"))
    screenshots(page, "user")
    tokens = page.get_by_role("table", name="Tokens")
    expect(tokens).to_contain_text("ci")
    page.get_by_role("button", name="Revoke token ci").click()
    expect(tokens.get_by_role("button", name="Revoke token ci")).to_have_count(0)
    expect(tokens).to_contain_text("login session")  # this session itself is still there
    page.get_by_role("link", name="Namespaces").click()
    expect(page.get_by_role("table", name="Namespaces")).to_contain_text("alice")
    screenshots(page, "namespaces")

    # -- bob sees nothing of alice's, not even by typing the URL
    other = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        bob = other.new_page()
        login(bob, standalone, "bob")
        expect(bob.get_by_text("No environments yet")).to_be_visible()
        bob.goto(f"{url}environment/alice/analysis/")
        expect(bob.get_by_role("alert")).to_have_text(
            "request not authorized: environment::read on 'alice/analysis' is not allowed")
        expect(bob.get_by_role("table", name="Builds")).to_have_count(0)
        bob.goto(f"{url}build/{first_build}/")
        expect(bob.get_by_role("alert")).to_contain_text("is not allowed")
        expect(bob.get_by_test_id("build-log")).to_have_count(0)
        screenshots(bob, "forbidden")
    finally:
        other.close()

    # -- a build that fails says why, on top, and the log marks the step that failed
    page.goto(f"{url}create/")
    page.get_by_label("environment.yaml").fill("name: broken\ndependencies:\n  - no-such-package\n")
    expect(page.get_by_test_id("validation")).to_contain_text("Valid", timeout=10_000)
    page.get_by_role("button", name="Create and build").click()
    expect(page.get_by_test_id("build-status")).to_have_text("FAILED", timeout=BUILD_TIMEOUT_MS)
    expect(page.get_by_test_id("failure-cause")).to_contain_text("no-such-package")
    expect(page.get_by_test_id("log-failure")).to_have_count(0)  # said once, on top
    expect(page.get_by_role("list", name="Build steps")).to_contain_text("solve")
    screenshots(page, "build-failed")

    # -- rebuild from the build page, then delete the environment (type its name to confirm)
    failed_url = page.url
    page.get_by_role("button", name="Rebuild").click()
    expect(page).not_to_have_url(failed_url)
    expect(page).to_have_url(re.compile(r"/build/\d+/$"))
    page.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name="alice/broken").click()
    expect(page.get_by_role("table", name="Builds").locator("tbody tr")).to_have_count(2)
    page.get_by_role("button", name="Delete", exact=True).click()
    dialog = page.get_by_role("dialog", name="Delete alice/broken?")
    confirm = dialog.get_by_role("button", name="Delete environment")
    expect(confirm).to_be_disabled()
    dialog.get_by_label("Type broken to confirm").fill("broken")
    screenshots(page, "delete-environment")
    confirm.click()
    expect(page.get_by_role("heading", name="Environments")).to_be_visible()
    expect(page.locator('tr[data-environment="alice/broken"]')).to_have_count(0)
    expect(page.locator('tr[data-environment="alice/analysis"]')).to_have_count(1)

    # -- keyboard: the first Tab of a page reaches the skip link; the next ones the navigation
    page.reload()
    expect(page.get_by_role("heading", name="Environments")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator("a.cs-brand")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Environments")).to_be_focused()

    # -- logout ends the session
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to conda-store")).to_be_visible()
    page.goto(url)
    expect(page.get_by_role("heading", name="Log in to conda-store")).to_be_visible()


def test_a_lockfile_environment_says_it_has_no_yaml_editor_and_rebuilds(standalone, page, screenshots):
    """An environment submitted as a conda-lock file ({name, description, lockfile} stored) is not
    offered as environment.yaml (that submit would fail: "unknown key(s) in specification: lockfile")."""
    api = httpx.Client(base_url=f"{standalone.url}api/v1/", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                       timeout=60)

    def completed(build_id: int) -> None:
        wait_for(lambda: api.get(f"build/{build_id}/").json()["data"]["status"] in ("COMPLETED", "FAILED"),
                 BUILD_TIMEOUT_MS / 1000, f"build {build_id}", 0.3)
        assert api.get(f"build/{build_id}/").json()["data"]["status"] == "COMPLETED"

    first = api.post("specification/", json={"namespace": "alice", "specification": "name: tolock\ndependencies:\n  - hello\n"})
    completed(first.json()["data"]["build_id"])
    lockfile = api.get(f"build/{first.json()['data']['build_id']}/lockfile/").text
    r = api.post("specification/", json={"specification": lockfile, "is_lockfile": True, "namespace": "alice",
                                         "environment_name": "locked"})
    assert r.status_code == 200, r.text
    locked = r.json()["data"]["build_id"]
    completed(locked)

    login(page, standalone, "alice")
    page.goto(f"{standalone.url}environment/alice/locked/")
    note = page.get_by_test_id("lockfile-note")
    expect(note).to_contain_text("made from a lockfile")
    expect(note).to_contain_text("conda-store env update -f conda-lock.yml -n ns/env")
    expect(page.get_by_role("button", name="Edit", exact=True)).to_be_disabled()
    expect(page.get_by_label("Current specification")).to_have_count(0)
    screenshots(page, "lockfile-environment")

    page.goto(f"{standalone.url}environment/alice/locked/edit/")
    expect(page.get_by_test_id("lockfile-note")).to_contain_text("cannot be edited as environment.yaml")
    expect(page.locator("textarea")).to_have_count(0)
    screenshots(page, "lockfile-edit")

    # rebuilding the lockfile build still works (installed as locked again)
    page.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name="alice/locked").click()
    page.get_by_role("button", name=f"Rebuild build {locked}").click()
    expect(page).to_have_url(re.compile(r"/build/\d+/$"))
    assert not page.url.endswith(f"/build/{locked}/")
    wait_completed(page)

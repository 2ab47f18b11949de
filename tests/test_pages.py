"""The service page host (server/pages.py, validation.py, the token login): what the browser gets.

The bundle is the real one built by ``npm run build`` (scripts/bootstrap); the browser tests
(tests/test_ui_page.py) drive it. Here: the HTML shell, its headers, the cache policy of the
bundle, the paste-a-token session, and the validation endpoint the editor calls.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from traitlets.config import Config

from conda_store_jupyter.server import pages
from conda_store_jupyter.server.testing import bearer, running_server, user_token
from conda_store_jupyter.server.validation import locate



@pytest.fixture(params=["/", "/services/conda-store/"], ids=["root", "hub-prefix"])
def server(request, tmp_path, redis_url, local_channel):
    c = Config()
    c.CondaStore.store_directory = str(tmp_path / "store")
    c.CondaStore.redis_url = redis_url
    c.CondaStore.conda_default_channels = [local_channel.url]
    c.CondaStoreServer.url_prefix = request.param
    with running_server(c) as s:
        yield s


def _root(html: str) -> dict[str, str]:
    tag = re.search(r'<div id="conda-store-root"([^>]*)>', html).group(1)
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', tag))


def test_shell_carries_prefix_and_xsrf_without_inline_script(server):
    prefix = server.app.url_prefix
    for path in ("", "environment/ns/env/", "build/12/", "create/", "user/", "namespaces/", "login/"):
        r = httpx.get(server.url + path)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["cache-control"] == "no-store"
        data = _root(r.text)
        assert data["prefix"] == prefix and data["login-mode"] == "token"
        assert data["xsrf"] and r.cookies.get("_xsrf")
        # Every script is an external file of the bundle: nothing inline for the CSP to forbid.
        assert re.findall(r"<script([^>]*)>", r.text) == [f' defer src="{prefix}static/{s}"' for s in pages.load_bundle().scripts]


def test_bundle_is_cached_forever_and_manifest_is_private(server):
    bundle = pages.load_bundle()
    for name in bundle.scripts + bundle.styles:
        r = httpx.get(f"{server.url}static/{name}")
        assert r.status_code == 200 and len(r.content) > 1000
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(f"{server.url}static/manifest.json").status_code == 404
    assert httpx.get(f"{server.url}static/..%2Fpages.py").status_code in (403, 404)
    # Unknown paths stay JSON 404s (the API's), not the page.
    r = httpx.get(f"{server.url}no/such/page/")
    assert r.status_code == 404 and r.json()["status"] == "error"


def test_pasted_token_becomes_a_revocable_cookie_session(server):
    token = user_token(server, "alice")
    with httpx.Client(base_url=server.url) as browser:
        browser.get("")  # the shell sets the xsrf cookie, as in a browser
        bad = browser.post("login/token/", json={"token": "cst_not-a-token"})
        assert bad.status_code == 401 and "this server does not know it" in bad.json()["message"]
        assert browser.post("login/token/", json={}).status_code == 400
        r = browser.post("login/token/", json={"token": token})
        assert r.status_code == 200 and r.json()["data"]["username"] == "alice"
        session = browser.cookies.get("conda-store-auth")
        assert session and session != token  # a new session token, not the pasted one
        assert browser.get("api/v1/permission/").json()["data"]["username"] == "alice"
        # Cookie writes without a JSON body need the XSRF header; the shell gave us the token.
        assert browser.post("logout/").status_code == 200
        assert browser.get("api/v1/permission/").json()["data"]["authenticated"] is False
    # Logging out revoked the session only; the pasted token still works.
    assert httpx.get(server.api("permission/"), headers=bearer(token)).json()["data"]["username"] == "alice"
    revoked = httpx.get(server.api("permission/"), headers=bearer(session))
    assert revoked.status_code == 401 and "revoked on" in revoked.json()["message"]


def test_dead_session_still_gets_the_page_and_can_log_in_again(server):
    """An expired session cookie must not lock the browser out: the shell is served (the cookie
    cleared, so the page shows its login), while the API says why the session is dead."""
    token = user_token(server, "alice")
    with httpx.Client(base_url=server.url) as browser:
        browser.get("")
        assert browser.post("login/token/", json={"token": token}).status_code == 200
        dead = browser.cookies.get("conda-store-auth")
        assert browser.post("logout/").status_code == 200  # revokes the session token
        browser.cookies.set("conda-store-auth", dead)  # as a stale browser tab would still send it
        api = browser.get("api/v1/permission/")
        assert api.status_code == 401 and "revoked on" in api.json()["message"]
        browser.cookies.set("conda-store-auth", dead)
        page = browser.get("")
        assert page.status_code == 200 and 'id="conda-store-root"' in page.text
        assert 'conda-store-auth=""' in page.headers["set-cookie"]
        browser.cookies.set("conda-store-auth", dead)
        assert browser.post("login/token/", json={"token": token}).status_code == 200


def test_validate_points_at_line_and_column(server):
    token = user_token(server, "alice")

    def validate(text):
        r = httpx.post(server.api("specification/validate/"), headers=bearer(token), json={"specification": text})
        assert r.status_code == 200, r.text
        return r.json()["data"]

    assert validate("name: ok\ndependencies:\n  - python\n") == {
        "valid": True, "message": None, "line": None, "column": None, "name": "ok"}
    bad_yaml = validate("name: x\ndependencies: [python\n")
    assert (bad_yaml["valid"], bad_yaml["line"], bad_yaml["column"]) == (False, 3, 1)
    assert bad_yaml["message"].startswith("invalid YAML at line 3, column 1")
    bad_spec = validate("name: x\ndependencies:\n  - python\n  - numpy 1\n")
    assert (bad_spec["line"], bad_spec["column"]) == (4, 5)
    assert "'numpy 1' is not a valid conda match spec" in bad_spec["message"]
    assert httpx.post(server.api("specification/validate/"), json={"specification": "x"}).status_code == 401
    assert httpx.post(server.api("specification/validate/"), headers=bearer(token), json={}).status_code == 400


def test_locate_nested_pip_and_missing_paths():
    text = "name: x\ndependencies:\n  - python\n  - pip:\n    - ok\n    - ''\n"
    assert locate(text, "dependencies[1].pip[1]: empty") == (6, 7)
    assert locate(text, "channels[0]: nope") == (None, None)
    assert locate(text, "specification is too large") == (None, None)


def test_listing_carries_current_build_and_detail_names_its_environment(server):
    token = user_token(server, "alice")
    r = httpx.post(server.api("specification/"), headers=bearer(token),
                   json={"specification": "name: env\ndependencies: [python]\n"})
    build_id = r.json()["data"]["build_id"]
    from conda_store_jupyter import orm

    with server.store.session() as db:
        env = db.get(orm.Build, build_id).environment
        env.current_build_id = build_id
    listing = httpx.get(server.api("environment/"), headers=bearer(token)).json()["data"]
    assert listing[0]["current_build"]["id"] == build_id and listing[0]["current_build"]["status"] == "QUEUED"
    assert listing[0]["current_build"]["build_artifacts"] == []
    detail = httpx.get(server.api(f"build/{build_id}/"), headers=bearer(token)).json()["data"]
    assert detail["environment"] == {"namespace": "alice", "name": "env"}
    assert detail["build_key"].endswith("-env")


def test_missing_bundle_says_how_to_build_it(server, tmp_path, monkeypatch):
    monkeypatch.setattr(pages, "STATIC_DIR", tmp_path / "nothing")
    r = httpx.get(server.url)
    assert r.status_code == 503 and "npm ci" in r.text


def test_hub_login_is_refused_outside_a_hub(server):
    for path in ("oauth_login/", "oauth_callback/?code=x&state=y"):
        r = httpx.get(server.url + path)
        assert r.status_code == 400 and "not running as a hub service" in r.json()["message"]


def test_next_url_stays_under_the_prefix(server):
    from conda_store_jupyter.server.hub_login import _next_url

    class Handler:  # what _next_url reads
        pass

    h = Handler()
    h.server = server.app
    prefix = server.app.url_prefix
    assert _next_url(h, "environment/alice/env/") == prefix + "environment/alice/env/"
    assert _next_url(h, "?search=py&page=2") == prefix + "?search=py&page=2"
    for evil in ("//evil.example/", "https://evil.example/", "../../hub/admin", "login/", "a\\b", "x\nLocation: y"):
        assert _next_url(h, evil) == prefix, evil


@pytest.mark.parametrize("configured, expected", [("", None), ("registry.example.org:5000", "registry.example.org:5000"),
                                                  ("https://registry.example.org/", "registry.example.org")])
def test_registry_url_is_the_docker_pull_host(tmp_path, configured, expected):
    """Under JupyterHub the page's host is the hub's proxy, which serves no /v2/: the configured
    registry host goes into the page and ``GET /api/v1/`` (where the Lab extension reads it)."""
    c = Config()
    c.CondaStore.store_directory = str(tmp_path / "store")
    c.CondaStoreServer.url_prefix = "/services/conda-store/"
    c.CondaStoreServer.registry_url = configured
    with running_server(c) as s:
        page = httpx.get(s.url)
        assert _root(page.text)["registry-host"] == (expected or s.url.split("/")[2])
        assert httpx.get(s.api("")).json()["data"]["registry_host"] == expected
    c.CondaStoreServer.enable_registry = False  # nothing to pull from: nothing announced
    with running_server(c) as s:
        assert httpx.get(s.api("")).json()["data"]["registry_host"] is None


@pytest.mark.parametrize("value, problem", [
    ("ftp://registry.example.org", "the scheme must be http or https, not 'ftp'"),
    ("registry.example.org/v2/", "it must not have a path"),
    ("https://user:pw@registry.example.org", "it must not carry credentials"),
    ("registry.example.org:port", "Port could not be cast to integer"),
    ("https://", "it names no host"),
])
def test_bad_registry_url_is_one_line_at_start(tmp_path, value, problem):
    config = tmp_path / "conda_store_config.py"
    config.write_text(f"c.CondaStore.store_directory = {str(tmp_path / 'store')!r}\n"
                      f"c.CondaStoreServer.registry_url = {value!r}\n")
    r = subprocess.run([str(Path(sys.executable).parent / "conda-store-server"), f"--config={config}", "--port=0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert f"CondaStoreServer.registry_url {value!r} is invalid: {problem}" in r.stderr

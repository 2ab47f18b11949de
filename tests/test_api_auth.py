"""Permissions over HTTP: who may read, build in, download from and change which namespace.

Users are real identities (``identity_for_user``: admin of their own namespace, viewer of the
default one) holding real issued tokens; the password flow uses the DummyAuthenticator and
``POST /login/``; cookie writes need XSRF, token writes do not.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select
from traitlets.config import Config

from conda_store_jupyter import orm
from conda_store_jupyter.schema import BuildStatus
from conda_store_jupyter.server.testing import bearer, running_server, user_token

SPEC = "name: env\ndependencies: [python]\n"


@pytest.fixture
def server(tmp_path, redis_url, local_channel):
    c = Config()
    c.CondaStore.store_directory = str(tmp_path / "store")
    c.CondaStore.redis_url = redis_url
    c.CondaStore.conda_default_channels = [local_channel.url]
    c.AuthenticationBackend.authenticator_class = "conda_store_jupyter.auth.backend.DummyAuthenticator"
    c.DummyAuthenticator.password = "s3cret"
    with running_server(c) as s:
        yield s


@pytest.fixture
def users(server):
    """alice and bob with one environment each (alice/env, bob/env); bob's build is COMPLETED."""
    tokens = {name: user_token(server, name) for name in ("alice", "bob")}
    builds = {}
    for name, token in tokens.items():
        r = httpx.post(server.api("specification/"), headers=bearer(token), json={"specification": SPEC})
        assert r.status_code == 200, r.text
        builds[name] = r.json()["data"]["build_id"]
    with server.store.session() as db:
        db.get(orm.Build, builds["bob"]).status = BuildStatus.COMPLETED
    return tokens, builds


def call(server, method, path, token=None, **kw):
    headers = bearer(token) if token else {}
    return httpx.request(method, server.api(path), headers=headers, timeout=30, **kw)


def test_cross_namespace_table(server, users):
    tokens, builds = users
    alice, bob = tokens["alice"], tokens["bob"]
    b = builds["bob"]
    table = [
        # (method, path, json) — alice acting on bob's things: always 403; anonymous: always 401
        ("GET", "namespace/bob/", None),
        ("GET", "environment/bob/env/", None),
        ("PUT", "environment/bob/env/", {"description": "x"}),
        ("DELETE", "environment/bob/env/", None),
        ("GET", f"build/{b}/", None),
        ("PUT", f"build/{b}/", None),
        ("PUT", f"build/{b}/cancel/", None),
        ("DELETE", f"build/{b}/", None),
        ("GET", f"build/{b}/packages/", None),
        ("GET", f"build/{b}/logs/", None),
        ("GET", f"build/{b}/lockfile/", None),
        ("GET", f"build/{b}/yaml/", None),
        ("GET", f"build/{b}/archive/", None),
        ("GET", "environment/bob/env/lockfile/", None),
        ("POST", "specification/", {"namespace": "bob", "specification": SPEC}),
        ("POST", "namespace/bob2/", None),
        ("PUT", "namespace/bob/", {"metadata": {}}),
        ("DELETE", "namespace/bob/", None),
        ("GET", "namespace/bob/roles", None),
        ("DELETE", "namespace/default/", None),
    ]
    for method, path, body in table:
        r = call(server, method, path, alice, json=body)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert r.json()["status"] == "error"
        r = call(server, method, path, None, json=body)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
    # listings are filtered, not refused
    # (``default`` exists from the start; users are its viewers by default)
    assert [e["name"] for e in call(server, "GET", "namespace/", alice).json()["data"]] == ["alice", "default"]
    envs = call(server, "GET", "environment/", alice).json()["data"]
    assert [(e["namespace"]["name"], e["name"]) for e in envs] == [("alice", "env")]
    assert [x["id"] for x in call(server, "GET", "build/", alice).json()["data"]] == [builds["alice"]]
    assert call(server, "GET", "environment/", None).json()["count"] == 0
    assert list(call(server, "GET", "usage/", alice).json()["data"]) == ["alice", "default"]
    # and the owner may do all of it
    assert call(server, "GET", "environment/bob/env/", bob).status_code == 200
    assert call(server, "PUT", "environment/bob/env/", bob, json={"description": "mine"}).status_code == 200


def test_namespace_role_mapping_grants_access(server, users):
    tokens, builds = users
    assert call(server, "GET", "environment/bob/env/", tokens["alice"]).status_code == 403
    r = call(server, "POST", "namespace/bob/role", tokens["bob"], json={"other_namespace": "alice", "role": "viewer"})
    assert r.status_code == 200, r.text
    assert call(server, "GET", "environment/bob/env/", tokens["alice"]).status_code == 200
    assert call(server, "PUT", "environment/bob/env/", tokens["alice"], json={"description": "x"}).status_code == 403
    assert call(server, "DELETE", "namespace/bob/roles", tokens["bob"]).status_code == 200
    assert call(server, "GET", "environment/bob/env/", tokens["alice"]).status_code == 403


def test_revoked_and_expired_tokens_stop_working(server, users):
    tokens, _ = users
    alice = tokens["alice"]
    child = call(server, "POST", "token/", alice, json={"note": "ci"}).json()["data"]
    assert call(server, "GET", "environment/alice/env/", child["token"]).status_code == 200
    assert child["id"] in [t["id"] for t in call(server, "GET", "token/", alice).json()["data"]]
    assert call(server, "DELETE", f"token/{child['id']}/", tokens["bob"]).status_code == 404  # not bob's
    assert call(server, "DELETE", f"token/{child['id']}/", alice).status_code == 200
    assert call(server, "GET", "environment/alice/env/", child["token"]).status_code == 401
    # a token revoking itself
    other = call(server, "POST", "token/", alice).json()["data"]["token"]
    assert call(server, "DELETE", "token/", other).status_code == 200
    r = call(server, "GET", "permission/", other)
    assert r.status_code == 401 and "revoked on" in r.json()["message"], r.text
    # expiry
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    short = call(server, "POST", "token/", alice, json={"expiration": soon}).json()["data"]
    assert call(server, "GET", "environment/alice/env/", short["token"]).status_code == 200
    with server.store.session() as db:
        db.get(orm.Token, short["id"]).expires_at = orm.utcnow() - dt.timedelta(seconds=1)
    r = call(server, "GET", "environment/alice/env/", short["token"])
    assert r.status_code == 401 and "expired on" in r.json()["message"], r.text
    for header in ("Bearer nope", "Basic !!!", "token cst_" + "x" * 300, "Weird"):
        r = httpx.get(server.api("environment/alice/env/"), headers={"Authorization": header})
        assert r.status_code == 401, header


INVALID = {
    "unknown": ("Bearer garbage", "does not know it"),
    "unknown, token scheme": ("token cst_typo0000000000000000000000", "does not know it"),
    "unknown, Basic password": ("Basic " + base64.b64encode(b"docker:typo").decode(), "does not know it"),
    "malformed Basic": ("Basic !!!", "must be base64"),
    "unsupported scheme": ("Digest x", "unsupported Authorization scheme"),
}


@pytest.mark.parametrize("path", ["environment/", "namespace/", "build/", "permission/", "token/", "",
                                  "no-such-route/", "metrics"])
def test_invalid_credential_is_401_on_every_route(server, path):
    """`Authorization: Bearer garbage` used to get ``200 {"data": []}``: an anonymous listing."""
    assert httpx.get(server.api(path), timeout=30).status_code in (200, 401, 404)  # no credential: as before
    for what, (header, message) in INVALID.items():
        r = httpx.get(server.api(path), headers={"Authorization": header}, timeout=30)
        assert r.status_code == 401, (what, r.text)
        assert r.json()["status"] == "error" and message in r.json()["message"], (what, r.text)
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="conda-store", error="invalid_token"'
    r = httpx.post(server.api("specification/"), headers={"Authorization": "Bearer garbage"},
                   json={"specification": SPEC}, timeout=30)
    assert r.status_code == 401 and "does not know it" in r.json()["message"]


def test_no_credential_still_anonymous(server, users):
    r = httpx.get(server.api("environment/"), timeout=30)
    assert r.status_code == 200 and r.json()["data"] == []
    r = httpx.get(server.api("environment/alice/env/"), timeout=30)
    assert r.status_code == 401 and "needs a login or token" in r.json()["message"]
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="conda-store"'


def test_dead_session_cookie_is_401_and_cleared_and_login_still_works(server):
    login = httpx.post(f"{server.url}login/", json={"username": "alice", "password": "s3cret"}, timeout=30)
    cookie = login.cookies["conda-store-auth"]
    with server.store.session() as db:
        row = db.scalars(select(orm.Token).order_by(orm.Token.id.desc())).first()
        row.expires_at = orm.utcnow() - dt.timedelta(seconds=1)
    r = httpx.get(server.api("environment/"), cookies={"conda-store-auth": cookie}, timeout=30)
    assert r.status_code == 401 and "expired on" in r.json()["message"] and "log in again" in r.json()["message"]
    assert 'conda-store-auth=""' in r.headers["set-cookie"]  # cleared
    # The way out still works with the dead cookie: log in again, or log out.
    again = httpx.post(f"{server.url}login/", json={"username": "alice", "password": "s3cret"},
                       cookies={"conda-store-auth": cookie}, timeout=30)
    assert again.status_code == 200, again.text
    out = httpx.post(f"{server.url}logout/", cookies={"conda-store-auth": cookie}, timeout=30)
    assert out.status_code == 200, out.text


def test_invalid_credential_is_401_in_the_registry(server, users):
    for path in ("/v2/", "/v2/alice/env/tags/list", "/v2/alice/env/manifests/latest"):
        url = server.url.rstrip("/") + path
        for what, (header, message) in INVALID.items():
            r = httpx.get(url, headers={"Authorization": header}, timeout=30)
            assert r.status_code == 401, (path, what, r.text)
            assert message in r.json()["errors"][0]["message"], (path, what, r.text)
            assert r.headers["WWW-Authenticate"] == 'Basic realm="conda-store"'
        r = httpx.get(url, timeout=30)  # no credential: the usual challenge
        assert r.status_code == 401 and "authentication required" in r.json()["errors"][0]["message"]


def test_scoped_token_manages_only_itself_and_its_children(server):
    """A viewer token minted from a session can neither see nor revoke the session."""
    session = user_token(server, "alice")
    session_id = server.auth.identity_for_token(session).token_id
    laptop = call(server, "POST", "token/", session, json={"note": "laptop"}).json()["data"]  # a copy
    viewer = call(server, "POST", "token/", session, json={"role_bindings": {"alice/*": ["viewer"]}}).json()["data"]
    child = call(server, "POST", "token/", viewer["token"], json={"note": "child"}).json()["data"]

    listed = {t["id"] for t in call(server, "GET", "token/", viewer["token"]).json()["data"]}
    assert listed == {viewer["id"], child["id"]}
    for other in (session_id, laptop["id"]):
        r = call(server, "DELETE", f"token/{other}/", viewer["token"])
        assert r.status_code == 403 and r.json()["status"] == "error", r.text
    assert call(server, "GET", "permission/", session).json()["data"]["authenticated"] is True
    # its own issue, and itself
    assert call(server, "DELETE", f"token/{child['id']}/", viewer["token"]).status_code == 200
    assert call(server, "DELETE", f"token/{viewer['id']}/", viewer["token"]).status_code == 200
    assert call(server, "GET", "permission/", viewer["token"]).status_code == 401  # revoked
    # the session still manages everything of alice's
    assert {session_id, laptop["id"]} <= {t["id"] for t in call(server, "GET", "token/", session).json()["data"]}
    assert call(server, "DELETE", f"token/{laptop['id']}/", session).status_code == 200


def test_login_cookie_and_xsrf(server):
    base = server.url
    with httpx.Client(base_url=base, timeout=30) as browser:
        assert browser.post("login/", json={"username": "carol", "password": "wrong"}).status_code == 401
        r = browser.post("login/", data={"username": "carol", "password": "s3cret"})  # form login
        assert r.status_code == 200, r.text
        assert "httponly" in r.headers["set-cookie"].lower()
        assert browser.get("api/v1/permission/").json()["data"]["primary_namespace"] == "carol"
        # cookie-authenticated writes a cross-site page could send (text or form POSTs) need the
        # xsrf token…
        body = json.dumps({"specification": SPEC})
        r = browser.post("api/v1/specification/", content=body, headers={"Content-Type": "text/plain"})
        assert r.status_code == 403 and "XSRF" in r.json()["message"]
        r = browser.post("api/v1/specification/", data={"specification": SPEC})
        assert r.status_code == 403 and "XSRF" in r.json()["message"]
        # …and are accepted with it
        xsrf = browser.cookies["_xsrf"]
        r = browser.post("api/v1/specification/", content=body,
                         headers={"Content-Type": "text/plain", "X-XSRFToken": xsrf})
        assert r.status_code == 200, r.text
        # JSON bodies need a CORS preflight cross-site (never granted here): no token needed
        r = browser.post("api/v1/specification/", json={"specification": SPEC})
        assert r.status_code == 200, r.text
        assert browser.post("logout/").status_code == 200
        assert browser.get("api/v1/permission/").json()["data"]["authenticated"] is False


def test_login_disabled_without_password(tmp_path, redis_url):
    c = Config()
    c.CondaStore.store_directory = str(tmp_path / "s")
    c.CondaStore.redis_url = redis_url
    with running_server(c) as s:
        r = httpx.post(s.url + "login/", json={"username": "a", "password": "b"})
        assert r.status_code == 401 and "disabled" in r.json()["message"]


def test_slow_storage_does_not_stall_other_requests(server, users, monkeypatch):
    """Artifact and log downloads call storage (S3: the network) off the event loop."""
    from conda_store_jupyter.schema import BuildArtifactType
    from conda_store_jupyter.storage.base import artifact_key

    tokens, builds = users
    bob, b = tokens["bob"], builds["bob"]
    storage = server.store.storage
    with server.store.session() as db:
        storage.put_bytes(artifact_key(BuildArtifactType.LOGS, db.get(orm.Build, b).build_key), b"line 1\n")
    entered = threading.Event()

    def slow(method):
        def call_slowly(*args, **kwargs):
            entered.set()
            time.sleep(0.6)  # an S3 round trip on a bad day
            return method(*args, **kwargs)
        return call_slowly

    for name in ("exists", "size", "get_bytes"):
        monkeypatch.setattr(storage, name, slow(getattr(storage, name)))
    with ThreadPoolExecutor(1) as pool:
        download = pool.submit(call, server, "GET", f"build/{b}/logs/", bob)
        assert entered.wait(10)
        started = time.monotonic()
        assert call(server, "GET", "").status_code == 200
        assert time.monotonic() - started < 0.3, "the event loop waited for storage"
        response = download.result()
    assert response.status_code == 200 and response.text == "line 1\n"


def test_log_stream_rejects_bad_event_ids(server, users):
    tokens, builds = users
    bob, b = tokens["bob"], builds["bob"]
    for params, headers in (({"after": "bogus"}, {}), ({}, {"Last-Event-ID": "1-x"}),
                            ({"after": "1-2-3"}, {}), ({}, {"Last-Event-ID": "\u0661-0".encode()})):
        r = httpx.get(server.api(f"build/{b}/logs/stream/"), params=params, timeout=30,
                      headers={**bearer(bob), **headers})
        assert r.status_code == 400, (params, headers, r.status_code, r.text)
        assert r.json()["status"] == "error" and "event id" in r.json()["message"]
    # a well-formed id streams (the build has ended: straight to the end event)
    r = httpx.get(server.api(f"build/{b}/logs/stream/"), params={"after": "0-0"}, headers=bearer(bob), timeout=30)
    assert r.status_code == 200 and "event: end" in r.text


# -- namespace ownership ------------------------------------------------------------------------
def test_two_users_never_share_a_namespace(server):
    """``bob@x.org`` and ``bob-x-org`` used to get the same namespace, each its admin."""
    from conda_store_jupyter.auth import tokens as token_rows

    owner = user_token(server, "bob-x-org")
    other = user_token(server, "bob@x.org")
    assert call(server, "POST", "specification/", owner, json={"specification": SPEC}).status_code == 200
    mine = call(server, "GET", "permission/", other).json()["data"]
    assert mine["primary_namespace"].startswith("bob-x-org--") and "bob-x-org/*" not in mine["entity_roles"]
    r = call(server, "POST", "specification/", other, json={"specification": SPEC})
    assert r.status_code == 200, r.text  # into their own, distinct namespace
    with server.store.session() as db:
        owners = dict(db.execute(select(orm.Namespace.name, orm.Namespace.owner)).all())
    assert owners == {"default": None, "bob-x-org": "bob-x-org", mine["primary_namespace"]: "bob@x.org"}

    # A token naming someone else's namespace as its user's own (issued before user names were
    # mapped injectively, say) grants nothing there, and says why.
    with server.store.session() as db:
        legacy = token_rows.issue_token(db, username="bob@x.org", primary_namespace="bob-x-org",
                                        role_bindings={"bob-x-org/*": ["admin"]}, expires_at=None).token
    assert "bob-x-org/*" not in call(server, "GET", "permission/", legacy).json()["data"]["entity_roles"]
    for method, path, kw in [("POST", "specification/", {"json": {"specification": SPEC}}),
                             ("DELETE", "environment/bob-x-org/env/", {}),
                             ("PUT", "namespace/bob-x-org/", {"json": {"metadata": {"x": 1}}})]:
        r = call(server, method, path, legacy, **kw)
        assert r.status_code == 403, (method, path, r.text)
        assert "namespace 'bob-x-org' belongs to another user" in r.json()["message"], r.text
    assert call(server, "GET", "environment/bob-x-org/env/", owner).status_code == 200  # untouched


def test_a_namespace_from_before_owners_is_claimed_by_its_user(server):
    with server.store.session() as db:
        db.add(orm.Namespace(name="erin", metadata_={}))  # created before owners were recorded
    token = user_token(server, "erin")
    assert call(server, "POST", "specification/", token, json={"specification": SPEC}).status_code == 200
    with server.store.session() as db:
        assert db.scalars(select(orm.Namespace.owner).where(orm.Namespace.name == "erin")).one() == "erin"

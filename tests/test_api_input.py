"""User input the fuzzing of issue 8 turned into 500s, dropped connections or misleading messages.

Each case goes through a real server over real HTTP (raw sockets where an HTTP client would
refuse to send the request at all) and checks the exact answer.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from traitlets.config import Config

from conda_store_jupyter.server.testing import bearer, running_server, user_token

ADMIN = "admin-token-for-input-tests-0123"
LONE_SURROGATE = '"\\udfff"'  # JSON text: a valid JSON string escape, but not Unicode


@pytest.fixture(scope="module")
def server(tmp_path_factory, redis_server_url, local_channel):
    c = Config()
    c.CondaStore.store_directory = str(tmp_path_factory.mktemp("store"))
    c.CondaStore.redis_url = redis_server_url + "/62"
    c.CondaStore.conda_default_channels = [local_channel.url]
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "root"}}
    with running_server(c) as s:
        with httpx.Client(headers=bearer(ADMIN), timeout=30) as client:
            r = client.post(s.api("specification/"), json={"namespace": "team",
                                                           "specification": "name: env\ndependencies: [python]"})
            assert r.status_code == 200, r.text
            s.build_id = r.json()["data"]["build_id"]
        yield s


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.api(""), headers=bearer(ADMIN), timeout=30) as c:
        yield c


def raw_request(url: str, request: bytes) -> bytes:
    """Send ``request`` as is on a new connection and return everything the server answers."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
        return b"".join(chunks)


def assert_400(r: httpx.Response, *fragments: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    body = r.json()
    assert body["status"] == "error" and body["data"] is None, body
    for fragment in fragments:
        assert fragment in body["message"], (fragment, body["message"])


# -- invalid Unicode ------------------------------------------------------------------------------
@pytest.mark.parametrize("method, path, body, field", [
    ("POST", "specification/", '{"namespace": "team", "specification": "name: u\\ndependencies: [python]", '
                               '"environment_description": %s}', "environment_description"),
    ("PUT", "environment/team/env/", '{"description": %s}', "description"),
    ("POST", "token/", '{"note": %s}', "note"),
    ("PUT", "namespace/team/metadata", '{"deep": {"list": ["ok", %s]}}', "deep.list[1]"),
    ("POST", "specification/", '{"namespace": "team", "specification": %s}', "specification"),
])
def test_lone_surrogates_are_400_naming_the_field(client, method, path, body, field):
    """JSON can spell a lone surrogate; no database can store one (it was a 500)."""
    r = client.request(method, path, content=(body % LONE_SURROGATE).encode(),
                       headers={"Content-Type": "application/json"})
    assert_400(r, f"{field}: not valid Unicode")


def test_lone_surrogate_spelled_in_yaml(client):
    r = client.post("specification/", json={"namespace": "team",
                                            "specification": 'name: y\ndescription: "\\udfff"\ndependencies: [python]'})
    assert_400(r, "description: not valid Unicode")


def test_surrogate_in_a_key_and_raw_bytes(client):
    r = client.put("namespace/team/metadata", content=b'{"\\ud800x": 1}', headers={"Content-Type": "application/json"})
    assert_400(r, "<a key>: not valid Unicode")
    # UTF-8-encoded surrogates in the raw body (not valid UTF-8) are refused the same way
    r = client.post("token/", content=b'{"note": "\xed\xbf\xbf"}', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["status"] == "error", r.text
    # a valid surrogate *pair* is a real character and fine
    r = client.post("token/", content=b'{"note": "\\ud83d\\ude00"}', headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text


def test_invalid_unicode_in_query_strings(client):
    r = client.get("environment/?search=%ED%BF%BF")
    assert r.status_code == 400 and r.json()["status"] == "error", r.text


# -- live log positions ---------------------------------------------------------------------------
@pytest.mark.parametrize("after", ["18446744073709551616-0", "0-18446744073709551616", "99999999999999999999-0"])
def test_log_stream_positions_beyond_64_bits_are_400(client, server, after):
    """Redis refuses ids above 2**64-1 with an error (it was a 500)."""
    r = client.get(f"build/{server.build_id}/logs/stream/", params={"after": after})
    assert_400(r, "Last-Event-ID/after", "below 2**64")
    r = client.get(f"build/{server.build_id}/logs/stream/", headers={"Last-Event-ID": after})
    assert_400(r, "Last-Event-ID/after")


def test_log_stream_position_at_the_limit_is_accepted(client, server):
    with client.stream("GET", f"build/{server.build_id}/logs/stream/",
                       params={"after": "18446744073709551615-18446744073709551615"}) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")


# -- oversized request line and headers -----------------------------------------------------------
def test_oversized_request_line_is_431(server):
    """Tornado closed the connection without a word at 64 KB; clients saw a reset."""
    target = "/api/v1/?x=" + "a" * 70_000
    answer = raw_request(server.url, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
    message = json.loads(body)["message"]
    assert message.startswith("request line and headers are ") and "the limit is 65536" in message


def test_oversized_header_is_431_and_normal_requests_still_work(server):
    with httpx.Client(timeout=30) as c:
        r = c.get(server.api(""), headers={"X-Big": "b" * 70_000})
        assert r.status_code == 431 and r.json()["status"] == "error", r.text
        r = c.post(server.api("specification/"), headers={"Cookie": "c=" + "b" * 70_000}, content=b"x" * 100_000)
        assert r.status_code == 431, r.text
        assert c.get(server.api(""), headers={"X-Fine": "b" * 30_000}).status_code == 200


# -- messages that misled -------------------------------------------------------------------------
def test_page_too_large_says_so(client):
    r = client.get("environment/", params={"page": "99999999999999999999"})
    assert_400(r, "'page' is too large: the maximum is 1000000000000")
    r = client.get("build/", params={"environment_id": "9" * 40})
    assert_400(r, "'environment_id' is too large")
    r = client.get("environment/", params={"page": "0"})
    assert_400(r, "'page' must be an integer >= 1")
    r = client.get("environment/", params={"page": "9" * 5000})  # beyond int()'s digit limit
    assert_400(r, "'page' is too large")
    assert client.get("environment/", params={"page": "0" * 50 + "1"}).status_code == 200


def test_name_of_the_wrong_type_says_the_type(client):
    r = client.post("specification/", json={"namespace": "team", "specification": "name: 123\ndependencies: [python]"})
    assert_400(r, "must be a string, got a number (123; quote it in YAML)")
    r = client.post("specification/", json={"namespace": 5, "specification": "name: x\ndependencies: [python]"})
    assert_400(r, "namespace must be a string, got a number")


def test_unknown_sort_by_lists_the_allowed_keys(client):
    r = client.get("build/", params={"sort_by": "colour"})
    assert_400(r, "sort_by 'colour' is not supported here; use one of: id, started_on, scheduled_on, ended_on")
    r = client.get("environment/", params={"sort_by": "id"})
    assert_400(r, "use one of: namespace, name")
    assert client.get("build/", params={"sort_by": "scheduled_on", "order": "desc"}).status_code == 200


def test_empty_listing_reports_the_page_size(client, server):
    for path in ("package/", "channel/", "environment/?namespace=nobody"):
        body = client.get(path).json()
        assert (body["data"], body["count"], body["size"]) == ([], 0, server.app.max_page_size), (path, body)
    assert client.get("channel/", params={"size": 7}).json()["size"] == 7


def test_form_login_on_a_server_without_password_login(server):
    r = httpx.post(server.url + "login/", data={"username": "a", "password": "b"})
    assert r.status_code == 401 and r.json()["message"].startswith("password login is disabled"), r.text
    r = httpx.post(server.url + "login/", data={})
    assert r.status_code == 401 and r.json()["message"].startswith("password login is disabled"), r.text


def test_ignored_prefix_is_a_warning(client, server):
    """``prefix:`` (from ``conda env export``) is accepted as upstream does, but not silently."""
    r = client.post("specification/", json={"namespace": "team",
                                            "specification": "name: pfx\nprefix: /etc\ndependencies: [python]"})
    assert r.status_code == 200, r.text
    assert r.json()["message"] == ("warning: prefix: '/etc' is ignored; "
                                   "conda-store chooses where environments are installed")
    build_id = r.json()["data"]["build_id"]
    # ... and the build's log opens with it (nothing consumes the queue here: it is the only line)
    log = client.get(f"build/{build_id}/logs/").text
    assert log.splitlines()[0] == "WARNING: " + r.json()["message"].removeprefix("warning: ")
    spec = client.get(f"build/{build_id}/").json()["data"]["specification"]["spec"]
    assert "prefix" not in spec  # not part of the specification (nor of its sha256)
    r = client.post("specification/", json={"namespace": "team", "specification": "name: p2\ndependencies: [python]"})
    assert r.json()["message"] is None
    r = client.post("specification/", json={"namespace": "team",
                                            "specification": "name: p3\nchannel: [x]\ndependencies: [python]"})
    assert_400(r, "unknown key(s) in specification: channel")  # a typo is still an error


def test_user_token_writes_own_namespace(server):
    """A user's first submission creates their namespace and records them as its owner."""
    token = user_token(server, "Carol@Example.org")
    r = httpx.post(server.api("specification/"), headers=bearer(token),
                   json={"specification": "name: env\ndependencies: [python]"})
    assert r.status_code == 200, r.text
    from conda_store_jupyter import orm
    from conda_store_jupyter.naming import namespace_for_username

    with server.store.session() as db:
        ns = db.query(orm.Namespace).filter_by(name=namespace_for_username("Carol@Example.org")).one()
        assert ns.owner == "Carol@Example.org"

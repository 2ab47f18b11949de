"""AuthenticationBackend on a real database: credentials, predefined tokens, down-scoping,
namespace role mappings, admins and password login."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re

import pytest
from traitlets.config import Config

from conda_store_jupyter import orm
from conda_store_jupyter.app import CondaStore
from conda_store_jupyter.auth import (
    AuthenticationBackend,
    DummyAuthenticator,
    Identity,
    NoLoginAuthenticator,
    Permission,
    namespace_for_username,
    revoke_token,
)
from conda_store_jupyter.exceptions import (
    AuthenticationError,
    PermissionDeniedError,
    ValidationError,
)

P = Permission
DAY = dt.timedelta(days=1)
PREDEFINED = "ci-token-0123456789abcdef"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def config() -> Config:
    c = Config()
    c.AuthenticationBackend.predefined_tokens = {
        PREDEFINED: {"primary_namespace": "ci", "role_bindings": {"ci/*": ["admin"], "alice/*": ["viewer"]},
                     "username": "ci-bot"},
    }
    c.AuthenticationBackend.admin_users = {"root"}
    return c


@pytest.fixture
def store(database_url, tmp_path, config):
    s = CondaStore(store_directory=str(tmp_path / "store"), database_url=database_url, config=config)
    yield s
    s.dispose()


@pytest.fixture
def backend(store) -> AuthenticationBackend:
    return AuthenticationBackend(store)


@pytest.fixture
def sqlite_backend(tmp_path, config):
    """For checks that never reach the database."""
    s = CondaStore(store_directory=str(tmp_path / "lite"), config=config)
    yield AuthenticationBackend(s)
    s.dispose()


def _session(backend, username="alice", **kw):
    """A logged-in user's session token (what POST /login/ sets as the cookie)."""
    return backend.issue_token_for(backend.identity_for_user(username, **kw), primary_namespace=None,
                                   role_bindings=None, expiration=None)


def _allowed(backend, identity, permission, arn) -> bool:
    with backend.store.session() as db:
        return backend.is_allowed(db, identity, permission, arn)


# -- credentials ------------------------------------------------------------------------------
def test_all_four_credential_forms(backend):
    token = _session(backend).token
    forms = [
        dict(cookie=token, authorization=None),
        dict(cookie=None, authorization=f"Bearer {token}"),
        dict(cookie=None, authorization=f"token {token}"),
        dict(cookie=None, authorization=_basic("anything", token)),
        dict(cookie=None, authorization=f"bearer   {token}  "),  # scheme is case-insensitive
    ]
    for creds in forms:
        identity = backend.authenticate_request(**creds)
        assert identity.authenticated, creds
        assert (identity.username, identity.primary_namespace) == ("alice", "alice")
        assert identity.role_bindings == {"alice/*": {"admin"}, "default/*": {"viewer"}}
        assert identity.token_id is not None and identity.expiration is not None


def test_cookie_first_then_header(backend):
    alice, bob = _session(backend, "alice").token, _session(backend, "bob").token
    assert backend.authenticate_request(cookie=alice, authorization=f"Bearer {bob}").username == "alice"
    # A stale cookie does not hide a valid header.
    assert backend.authenticate_request(cookie="stale", authorization=f"Bearer {bob}").username == "bob"


@pytest.mark.parametrize("authorization", [None, "", "   "])
def test_no_credential_is_anonymous(backend, authorization):
    identity = backend.authenticate_request(cookie=None, authorization=authorization)
    assert identity.anonymous and identity.username is None
    assert identity.primary_namespace == "default" and identity.role_bindings == {}


@pytest.mark.parametrize(("authorization", "message"), [
    ("Bearer", "'Bearer' without a token"), ("Bearer ", "'Bearer' without a token"),
    ("token", "'token' without a token"),
    ("Bearer cst_garbage", "does not know it"), ("Bearer cst_" + "A" * 51, "does not know it"),
    ("Bearer garbage", "does not know it"), ("token typo", "does not know it"),
    ("Digest abc", "unsupported Authorization scheme 'Digest'"),
    ("\x00\x01", "unsupported Authorization scheme '??'"),
    ("Basic", "need a conda-store token as the password"), ("Basic !!!not-base64!!!", "must be base64"),
    ("Basic " + base64.b64encode(b"no-colon").decode(), "need a conda-store token as the password"),
    ("Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), "must be base64"),
    ("Basic " + base64.b64encode(b"user:").decode(), "need a conda-store token as the password"),
    ("Basic " + base64.b64encode(b"user:typo").decode(), "does not know it"),
    ("Bearer " + "x" * 100_000, "longer than any token"), ("Bearer \udcff", "does not know it"),
    ("Bearer cst_" + "A" * 8 + "\udcff" * 10, "does not know it"),
])
def test_invalid_credentials_are_errors_not_anonymous(backend, authorization, message):
    """A presented credential that is not valid is a 401 saying why, never silently anonymous."""
    with pytest.raises(AuthenticationError, match=re.escape(message)):
        backend.authenticate_request(cookie=None, authorization=authorization)
    with pytest.raises(AuthenticationError, match=re.escape(message)):
        asyncio.run(backend.authenticate_request_async(cookie=None, authorization=authorization))


def test_invalid_cookie_is_an_error_naming_the_cookie(backend):
    for cookie in ("garbage \udcff", "cst_" + "B" * 51):
        with pytest.raises(AuthenticationError, match="does not know it.*conda-store-auth session cookie: log in again"):
            backend.authenticate_request(cookie=cookie, authorization=None)


def test_revoked_and_expired_tokens_say_so(backend, store):
    revoked, expired = _session(backend), _session(backend)
    with store.session() as db:
        revoke_token(db, revoked.id)
        db.get(orm.Token, expired.id).expires_at = orm.utcnow() - dt.timedelta(seconds=1)
    for issued, message in ((revoked, r"invalid token: it was revoked on 20\d\d-"),
                            (expired, r"invalid token: it expired on 20\d\d-")):
        for creds in (dict(cookie=None, authorization=f"Bearer {issued.token}"),
                      dict(cookie=None, authorization=f"token {issued.token}"),
                      dict(cookie=None, authorization=_basic("docker", issued.token)),
                      dict(cookie=issued.token, authorization=None)):
            with pytest.raises(AuthenticationError, match=message):
                backend.authenticate_request(**creds)
        assert backend.identity_for_token(issued.token) is None


# -- predefined tokens ------------------------------------------------------------------------
def test_predefined_token(backend):
    for creds in (dict(cookie=None, authorization=_basic("docker", PREDEFINED)),
                  dict(cookie=PREDEFINED, authorization=None)):
        identity = backend.authenticate_request(**creds)
        assert identity.authenticated and identity.username == "ci-bot"
        assert identity.primary_namespace == "ci" and identity.expiration is None
        assert _allowed(backend, identity, P.ENVIRONMENT_DELETE, "ci/env")
        assert _allowed(backend, identity, P.ENVIRONMENT_READ, "alice/env")
        assert not _allowed(backend, identity, P.ENVIRONMENT_UPDATE, "alice/env")
    with pytest.raises(AuthenticationError, match="does not know it"):
        backend.authenticate_request(cookie=PREDEFINED[:-1], authorization=None)


@pytest.mark.parametrize("value, message", [
    ({"short": {"primary_namespace": "ci", "role_bindings": {}}}, "at least 8 characters"),
    ({PREDEFINED: {"primary_namespace": "CI!", "role_bindings": {}}}, "primary_namespace"),
    ({PREDEFINED: {"primary_namespace": "ci", "role_bindings": {"ci/*": ["god"]}}}, "unknown role"),
    ({PREDEFINED: {"primary_namespace": "ci", "roles": {}}}, "unknown key"),
    ({PREDEFINED: "ci"}, "must be a dict"),
])
def test_bad_predefined_tokens_fail_at_configuration_without_echoing_the_token(sqlite_backend, value, message):
    with pytest.raises(ValidationError, match=message) as err:
        sqlite_backend.predefined_tokens = value
    assert PREDEFINED not in str(err.value)


# -- down-scoping -----------------------------------------------------------------------------
def _alice(backend):
    """Alice's session identity (expires in a day) as a handler would see it."""
    issued = _session(backend)
    return backend.authenticate_request(cookie=issued.token, authorization=None)


@pytest.mark.parametrize("bindings, ok", [
    (None, True),
    ({}, True),
    ({"alice/env": ["viewer"]}, True),
    ({"alice/*": ["editor"]}, True),
    ({"alice/*": ["admin"], "default/*": ["viewer"]}, True),
    ({"alice/*": ["viewer"], "default/x": ["viewer"]}, True),
    ({"default/*": ["developer"]}, False),
    ({"bob/*": ["viewer"]}, False),
    ({"*/*": ["viewer"]}, False),
    ({"alice*/*": ["viewer"]}, False),
])
def test_down_scoping_role_bindings(backend, bindings, ok):
    alice = _alice(backend)
    if not ok:
        with pytest.raises(ValidationError, match="not a subset of the current token's permissions"):
            backend.issue_token_for(alice, primary_namespace=None, role_bindings=bindings, expiration=None)
        return
    issued = backend.issue_token_for(alice, primary_namespace=None, role_bindings=bindings, expiration=None)
    child = backend.authenticate_request(cookie=None, authorization=f"Bearer {issued.token}")
    assert child.authenticated and child.username == "alice" and child.primary_namespace == "alice"
    assert child.expiration == alice.expiration  # inherited
    expected = alice.role_bindings if bindings is None else {k: {("developer" if r == "editor" else r)
                                                                 for r in v} for k, v in bindings.items()}
    assert child.role_bindings == expected
    assert child.scoped is (bindings is not None)


def test_down_scoping_expiration(backend):
    alice = _alice(backend)
    now = orm.utcnow()

    def issue(expiration):
        return backend.issue_token_for(alice, primary_namespace=None, role_bindings=None, expiration=expiration)

    assert issue(now + dt.timedelta(hours=1)).expires_at == now + dt.timedelta(hours=1)
    with pytest.raises(ValidationError, match="later than the current token's"):
        issue(alice.expiration + dt.timedelta(seconds=1))
    with pytest.raises(ValidationError, match="in the future"):
        issue(now - dt.timedelta(seconds=1))
    # Predefined tokens never expire, but issued tokens are bounded by token_max_lifetime.
    ci = backend.authenticate_request(cookie=PREDEFINED, authorization=None)
    ok = backend.issue_token_for(ci, primary_namespace=None, role_bindings=None, expiration=now + 29 * DAY)
    assert ok.expires_at == now + 29 * DAY
    with pytest.raises(ValidationError, match="tokens live at most 2592000 seconds"):
        backend.issue_token_for(ci, primary_namespace=None, role_bindings=None, expiration=now + 31 * DAY)
    default = backend.issue_token_for(ci, primary_namespace=None, role_bindings=None, expiration=None)
    assert now + DAY - dt.timedelta(minutes=1) < default.expires_at <= orm.utcnow() + DAY


def test_anonymous_caller_defaults(backend):
    anon = backend.authenticate_request(cookie=None, authorization=None)
    issued = backend.issue_token_for(anon, primary_namespace=None, role_bindings=None, expiration=None)
    assert issued.primary_namespace == "default" and issued.role_bindings == {}
    # short-lived: AuthenticationBackend.anonymous_token_lifetime (an hour)
    hour = dt.timedelta(hours=1)
    assert orm.utcnow() + hour - dt.timedelta(minutes=1) < issued.expires_at <= orm.utcnow() + hour
    with pytest.raises(ValidationError, match="not a subset"):
        backend.issue_token_for(anon, primary_namespace=None, role_bindings={"default/*": ["viewer"]},
                                expiration=None)
    with pytest.raises(ValidationError, match="later than"):
        backend.issue_token_for(anon, primary_namespace=None, role_bindings=None,
                                expiration=orm.utcnow() + 2 * hour)
    # The minted token is authenticated but can do nothing (no mappings, no defaults sneak in).
    with backend.store.session() as db:
        ns = orm.Namespace(name="default", role_mappings=[orm.NamespaceRoleMapping(entity="*/*", role="admin")])
        db.add(ns)
    child = backend.authenticate_request(cookie=issued.token, authorization=None)
    assert child.authenticated and not _allowed(backend, child, P.ENVIRONMENT_READ, "default/x")


def test_anonymous_defaults_are_configurable(backend):
    backend.unauthenticated_role_bindings = {"{default_namespace}/*": ["viewer"]}
    anon = backend.authenticate_request(cookie=None, authorization=None)
    assert _allowed(backend, anon, P.ENVIRONMENT_READ, "default/x")
    assert not _allowed(backend, anon, P.ENVIRONMENT_READ, "alice/x")
    issued = backend.issue_token_for(anon, primary_namespace=None, role_bindings={"default/x": ["viewer"]},
                                     expiration=None)
    assert issued.role_bindings == {"default/x": ["viewer"]}


def test_scoped_tokens_cannot_regain_permissions(backend):
    alice = _alice(backend)
    viewer = backend.issue_token_for(alice, primary_namespace=None, role_bindings={"alice/*": ["viewer"]},
                                     expiration=None)
    v = backend.authenticate_request(cookie=viewer.token, authorization=None)
    with pytest.raises(ValidationError, match="not a subset"):
        backend.issue_token_for(v, primary_namespace=None, role_bindings={"alice/*": ["editor"]}, expiration=None)
    copy = backend.issue_token_for(v, primary_namespace=None, role_bindings=None, expiration=None)
    assert copy.role_bindings == {"alice/*": ["viewer"]}
    # Another primary namespace => a scoped snapshot of what the caller may do, nothing more.
    other = backend.issue_token_for(alice, primary_namespace="elsewhere", role_bindings=None, expiration=None)
    o = backend.authenticate_request(cookie=other.token, authorization=None)
    assert o.scoped and o.primary_namespace == "elsewhere"
    assert _allowed(backend, o, P.ENVIRONMENT_DELETE, "alice/x")
    assert not _allowed(backend, o, P.ENVIRONMENT_READ, "elsewhere/x")
    with pytest.raises(ValidationError, match="primary_namespace"):
        backend.issue_token_for(alice, primary_namespace="../x", role_bindings=None, expiration=None)


# -- authorization: role mappings, admins -----------------------------------------------------
def test_namespace_role_mappings_apply_at_authorize_time(backend, store):
    bob = backend.authenticate_request(cookie=_session(backend, "bob").token, authorization=None)
    carol = backend.authenticate_request(cookie=_session(backend, "carol").token, authorization=None)
    scoped = backend.issue_token_for(bob, primary_namespace=None, role_bindings={"bob/*": ["viewer"]},
                                     expiration=None)
    scoped_bob = backend.authenticate_request(cookie=scoped.token, authorization=None)
    with store.session() as db:
        with pytest.raises(PermissionDeniedError, match="request not authorized"):
            backend.authorize(db, bob, P.ENVIRONMENT_CREATE, "team/env")
        team = orm.Namespace(name="team")
        team.role_mappings = [orm.NamespaceRoleMapping(entity="bob/*", role="editor"),
                              orm.NamespaceRoleMapping(entity="bogus/*", role="superuser")]  # skipped
        db.add(team)
    with store.session() as db:  # same token, new grant: applies at once
        backend.authorize(db, bob, P.ENVIRONMENT_CREATE, "team/env")
        backend.authorize(db, bob, P.NAMESPACE_READ, "team/")
        with pytest.raises(PermissionDeniedError):
            backend.authorize(db, bob, P.ENVIRONMENT_DELETE, "team/env")
        with pytest.raises(PermissionDeniedError):
            backend.authorize(db, carol, P.ENVIRONMENT_READ, "team/env")
        with pytest.raises(PermissionDeniedError):  # a down-scoped token gets no live grants
            backend.authorize(db, scoped_bob, P.ENVIRONMENT_READ, "team/env")
        assert ("team", "bob/*", "developer") in backend.role_mappings(db)
        db.query(orm.Namespace).filter_by(name="team").one().deleted_on = orm.utcnow()
    with store.session() as db:  # a deleted namespace grants nothing
        assert backend.role_mappings(db) == []
        with pytest.raises(PermissionDeniedError):
            backend.authorize(db, bob, P.ENVIRONMENT_CREATE, "team/env")


def test_authorize_errors(backend, store):
    anon = backend.anonymous_identity()
    alice = _alice(backend)
    with store.session() as db:
        with pytest.raises(AuthenticationError, match="request not authenticated"):
            backend.authorize(db, anon, P.ENVIRONMENT_READ, "alice/env")
        with pytest.raises(PermissionDeniedError, match="request not authorized: environment::read on 'bob/env'"):
            backend.authorize(db, alice, "environment::read", "bob/env")
        with pytest.raises(ValidationError, match="unknown permission"):
            backend.authorize(db, alice, "environment::fly", "alice/env")
        backend.authorize(db, alice, P.ENVIRONMENT_DELETE, "alice/env")
        backend.authorize(db, alice, P.ENVIRONMENT_READ, "default/env")


def test_admin_users(backend):
    login = backend.identity_for_user("root")
    assert login.admin
    root = backend.authenticate_request(cookie=_session(backend, "root").token, authorization=None)
    assert root.admin and _allowed(backend, root, P.NAMESPACE_DELETE, "zed/")
    scoped = backend.issue_token_for(root, primary_namespace=None, role_bindings={"zed/*": ["viewer"]},
                                     expiration=None)
    s = backend.authenticate_request(cookie=scoped.token, authorization=None)
    assert not s.admin and not _allowed(backend, s, P.ENVIRONMENT_DELETE, "zed/x")
    assert _allowed(backend, s, P.ENVIRONMENT_READ, "zed/x")
    # Removing someone from admin_users applies to their session at once.
    backend.admin_users = set()
    again = backend.authenticate_request(cookie=_session(backend, "root").token, authorization=None)
    assert not again.admin and not _allowed(backend, again, P.NAMESPACE_DELETE, "zed/")
    # Hub admins (admin=True from the caller) are admins too.
    assert backend.identity_for_user("hubadmin", admin=True).admin


# -- users and login --------------------------------------------------------------------------
@pytest.mark.parametrize("name, namespace", [
    ("alice", "alice"), ("a.b_c-d", "a.b_c-d"),  # valid names are their own namespace
    # changed names keep a readable stem and get a hash of the original name (see test_naming.py)
    ("Alice", "alice--3bc51062"), ("bob@example.org", "bob-example-org--686b5e4c"),
    ("  Émile Zola ", "emile-zola--6760d3b7"), ("É", "e--a755f65d"),
    ("x" * 80, "x" * 54 + "--d929cdee"),
])
def test_user_names_become_namespaces(name, namespace):
    assert namespace_for_username(name) == namespace


@pytest.mark.parametrize("name", ["", "   ", "@@@", "ß", None])
def test_unusable_user_names_are_refused_clearly(name):
    with pytest.raises(ValidationError, match="user name"):
        namespace_for_username(name)


def test_identity_for_user_bindings_and_groups(sqlite_backend):
    sqlite_backend.group_role_bindings = {
        "ml": {"ml/*": ["developer"], "{primary_namespace}-scratch/*": ["admin"]},
    }
    ident = sqlite_backend.identity_for_user("Dana", groups=["ml", "unknown"])
    ns = namespace_for_username("Dana")
    assert ident.primary_namespace == ns and ident.username == "Dana" and ident.authenticated
    assert ident.role_bindings == {f"{ns}/*": {"admin"}, "default/*": {"viewer"}, "ml/*": {"developer"},
                                   f"{ns}-scratch/*": {"admin"}}
    with pytest.raises(ValidationError, match="role binding"):
        sqlite_backend.authenticated_role_bindings = {"{primary_namespace}": ["admin"]}


def test_password_login_with_dummy_authenticator(store, config):
    config.AuthenticationBackend.authenticator_class = DummyAuthenticator
    config.DummyAuthenticator.password = "s3cret"
    backend = AuthenticationBackend(store, config=config)
    assert isinstance(backend.authenticator, DummyAuthenticator) and backend.authenticator.login_enabled
    identity = backend.login("alice", "s3cret")
    assert identity.authenticated and identity.primary_namespace == "alice"
    issued = backend.issue_token_for(identity, primary_namespace=None, role_bindings=None, expiration=None)
    assert backend.authenticate_request(cookie=issued.token, authorization=None).username == "alice"
    for user, password in [("alice", "wrong"), ("alice", ""), ("", "s3cret"), ("alice", "s3cret ")]:
        with pytest.raises(AuthenticationError, match="invalid username or password"):
            backend.login(user, password)
    with pytest.raises(ValidationError, match="must be strings"):
        backend.login("alice", None)
    with pytest.raises(ValidationError, match="cannot be used as a namespace"):
        backend.login("@@@", "s3cret")

    backend.authenticator.allowed_users = {"alice"}
    backend.login("alice", "s3cret")
    with pytest.raises(AuthenticationError):
        backend.login("bob", "s3cret")


def test_login_disabled_by_default_and_without_password(sqlite_backend):
    assert isinstance(sqlite_backend.authenticator, NoLoginAuthenticator)
    with pytest.raises(AuthenticationError, match="password login is disabled"):
        sqlite_backend.login("alice", "password")
    dummy = DummyAuthenticator()
    assert not dummy.login_enabled and dummy.authenticate("alice", "") is None


def test_configuration_is_read_from_the_store_config(sqlite_backend):
    assert sqlite_backend.admin_users == {"root"}
    assert sqlite_backend.cookie_name == "conda-store-auth"
    assert sqlite_backend.token_max_lifetime == 30 * 24 * 3600
    assert sqlite_backend.default_token_lifetime == 24 * 3600
    for name, trait in AuthenticationBackend.class_traits(config=True).items():
        assert trait.help, f"AuthenticationBackend.{name} has no help text"
    for name, trait in DummyAuthenticator.class_traits(config=True).items():
        assert trait.help, f"DummyAuthenticator.{name} has no help text"
    assert isinstance(sqlite_backend.anonymous_identity(), Identity)

"""Issued API tokens on SQLite and PostgreSQL: format, hashing, expiry, revocation, last_used."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from conda_store_jupyter import orm
from conda_store_jupyter.app import CondaStore
from conda_store_jupyter.auth.tokens import (
    IssuedToken,
    check_token,
    issue_token,
    list_tokens,
    revoke_token,
    verify_token,
)
from conda_store_jupyter.exceptions import AuthenticationError, InvalidNameError, NotFoundError, ValidationError

TOKEN_RE = re.compile(r"^cst_[A-Za-z0-9_-]{8}[A-Za-z0-9_-]{43}$")


@pytest.fixture
def store(database_url, tmp_path):
    s = CondaStore(store_directory=str(tmp_path / "store"), database_url=database_url)
    yield s
    s.dispose()


def _issue(db, **kw) -> IssuedToken:
    args = dict(username="alice", primary_namespace="alice", role_bindings={"alice/*": ["editor"]},
                expires_at=orm.utcnow() + dt.timedelta(hours=1))
    args.update(kw)
    return issue_token(db, **args)


def test_round_trip_and_storage_is_hashed(store):
    with store.session() as db:
        issued = _issue(db, note="laptop")
    assert TOKEN_RE.match(issued.token), issued.token
    assert issued.role_bindings == {"alice/*": ["developer"]}  # editor is stored canonically
    assert issued.token not in repr(issued)  # the plaintext never lands in logs by accident

    with store.session() as db:
        row = verify_token(db, issued.token)
        assert row is not None and row.id == issued.id
        assert (row.username, row.primary_namespace, row.note) == ("alice", "alice", "laptop")
        assert row.role_bindings == {"alice/*": ["developer"]}
        assert row.expires_at == issued.expires_at
        # Only the lookup prefix is stored in clear; the secret is not stored anywhere.
        secret = issued.token[len("cst_") + 8:]
        assert row.prefix == issued.token[4:12]
        assert issued.token not in row.hashed and secret not in row.hashed
        assert row.hashed.startswith("sha512:")

    with store.engine.connect() as conn:  # nothing in any column of the table holds the plaintext
        for values in conn.exec_driver_sql("SELECT * FROM token").all():
            assert all(secret not in str(v) for v in values)


def test_two_tokens_differ_even_with_equal_fields(store):
    with store.session() as db:
        a, b = _issue(db), _issue(db)
        rows = {r.id: r for r in list_tokens(db, username="alice")}
    assert a.token != b.token
    assert rows[a.id].hashed != rows[b.id].hashed  # salted


@pytest.mark.parametrize("garbage", [
    "", "cst_", "cst_abcdefgh", "nope", "Bearer x", "cst_" + "x" * 300, None, 42, "cst_\x00\xff",
])
def test_garbage_is_not_a_token(store, garbage):
    with store.session() as db:
        _issue(db)
        assert verify_token(db, garbage) is None


def test_right_prefix_wrong_secret_is_refused(store):
    with store.session() as db:
        issued = _issue(db)
        tampered = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
        assert verify_token(db, tampered) is None
        assert verify_token(db, issued.token[:-1]) is None
        assert verify_token(db, issued.token) is not None


def test_revoked_token_stops_working(store):
    with store.session() as db:
        issued = _issue(db)
    with store.session() as db:
        revoke_token(db, issued.id)
        revoke_token(db, issued.id)  # idempotent
    with store.session() as db:
        assert verify_token(db, issued.token) is None
        assert list_tokens(db, username="alice") == []
        assert [t.id for t in list_tokens(db, username="alice", include_inactive=True)] == [issued.id]
        with pytest.raises(NotFoundError, match="token 999 does not exist"):
            revoke_token(db, 999)


def test_expired_token_stops_working(store):
    with store.session() as db:
        issued = _issue(db, expires_at=orm.utcnow() + dt.timedelta(minutes=5))
        assert verify_token(db, issued.token) is not None
    with store.session() as db:  # time passes
        db.get(orm.Token, issued.id).expires_at = orm.utcnow() - dt.timedelta(seconds=1)
    with store.session() as db:
        assert verify_token(db, issued.token) is None
        assert list_tokens(db) == []


def test_non_expiring_token_and_aware_datetimes(store):
    aware = dt.datetime.now(dt.timezone(dt.timedelta(hours=2))) + dt.timedelta(hours=1)
    with store.session() as db:
        forever = _issue(db, expires_at=None)
        local = _issue(db, expires_at=aware)
        assert verify_token(db, forever.token).expires_at is None
    assert local.expires_at.tzinfo is None
    assert local.expires_at == aware.astimezone(dt.timezone.utc).replace(tzinfo=None)


def test_last_used_is_written_at_most_once_a_minute(store):
    with store.session() as db:
        issued = _issue(db)
        assert db.get(orm.Token, issued.id).last_used is None
    with store.session() as db:
        first = verify_token(db, issued.token).last_used
    assert first is not None
    with store.session() as db:
        assert verify_token(db, issued.token).last_used == first  # not rewritten within a minute
        db.get(orm.Token, issued.id).last_used = first - dt.timedelta(minutes=2)
    with store.session() as db:
        assert verify_token(db, issued.token).last_used >= first


@pytest.mark.parametrize("kw, error, message", [
    ({"primary_namespace": "../etc"}, InvalidNameError, "primary_namespace"),
    ({"primary_namespace": "Alice"}, InvalidNameError, "primary_namespace"),
    ({"role_bindings": {"alice": ["viewer"]}}, ValidationError, "namespace/environment"),
    ({"role_bindings": {"alice/*": ["root"]}}, ValidationError, "unknown role"),
    ({"role_bindings": {"alice/*": "viewer"}}, ValidationError, "list of roles"),
    ({"expires_at": orm.utcnow() - dt.timedelta(seconds=1)}, ValidationError, "in the future"),
    ({"expires_at": "tomorrow"}, ValidationError, "expected a datetime"),
])
def test_bad_input_is_a_clear_validation_error(store, kw, error, message):
    with store.session() as db:
        with pytest.raises(error, match=message):
            _issue(db, **kw)
        assert list_tokens(db, include_inactive=True) == []


def test_check_token_says_why_a_token_is_refused(store):
    with store.session() as db:
        revoked, expired, live = _issue(db), _issue(db), _issue(db)
        revoke_token(db, revoked.id)
        db.get(orm.Token, expired.id).expires_at = orm.utcnow() - dt.timedelta(seconds=1)
    with store.session() as db:
        assert check_token(db, live.token).id == live.id
        with pytest.raises(AuthenticationError, match=r"^invalid token: it was revoked on \d{4}-\d\d-\d\d .* UTC$"):
            check_token(db, revoked.token)
        with pytest.raises(AuthenticationError, match=r"^invalid token: it expired on \d{4}-\d\d-\d\d .* UTC$"):
            check_token(db, expired.token)
        for unknown in (live.token[:-1] + ("A" if live.token[-1] != "A" else "B"), "cst_short", "typo",
                        "cst_" + "A" * 8 + "\udcff" * 43):
            with pytest.raises(AuthenticationError, match="this server does not know it"):
                check_token(db, unknown)

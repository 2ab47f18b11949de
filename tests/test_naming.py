"""The one name grammar and build keys."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from conda_store_jupyter.exceptions import InvalidNameError
from conda_store_jupyter.naming import (
    NAME_MAX_LENGTH,
    build_key,
    namespace_for_username,
    parse_build_key,
    validate_name,
    validate_tag,
)


@pytest.mark.parametrize("name", ["alice", "data-science", "py3.11", "a_b", "a__b", "x--y", "0"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "..", ".hidden", "a/b", "a..b", "-a", "a-", "Alice", "a b", "a\x00", "ä", "x" * 65, None, 3]
)
def test_invalid_names(name):
    with pytest.raises(InvalidNameError):
        validate_name(name)


def test_build_key_round_trip():
    when = datetime(2026, 11, 21, 5, 0, tzinfo=timezone.utc)
    key = build_key("0123456789abcdef" * 4, when, 42, "demo")
    assert key == f"01234567-{int(when.timestamp())}-42-demo"
    assert parse_build_key(key) == 42
    assert validate_tag(key) == key
    with pytest.raises(InvalidNameError):
        parse_build_key("latest")


@pytest.mark.parametrize("value, message", [
    (123, "environment name must be a string, got a number (123; quote it in YAML)"),
    (1.5, "must be a string, got a number"),
    (None, "must be a string, got nothing (null)"),
    (True, "must be a string, got a boolean"),
    (["x"], "must be a string, got a list"),
    ("", "environment name must not be empty"),
])
def test_name_type_errors_say_what_was_given(value, message):
    with pytest.raises(InvalidNameError, match=re.escape(message)):
        validate_name(value, "environment name")


# -- user namespaces ------------------------------------------------------------------------------
USERS = ["bob@x.org", "bob-x-org", "bob.x.org", "Bob-X-Org", "a+b", "a-b", "a b", "A-B", "alice",
         "Alice", "ALICE", "émile", "emile", "x" * 80, "x" * 81, "bob-x-org--0123abcd",
         "bob-x-org-0123abcd", "a--b", "a__b"]


def test_namespace_for_username_is_injective():
    """Distinct user names never share a namespace: otherwise the default ``{primary_namespace}/*:
    admin`` binding makes one user admin of another's environments (bob@x.org vs bob-x-org)."""
    namespaces = [namespace_for_username(u) for u in USERS]
    assert len(set(namespaces)) == len(USERS), sorted(zip(namespaces, USERS))
    for namespace in namespaces:
        assert validate_name(namespace) == namespace and len(namespace) <= NAME_MAX_LENGTH


@pytest.mark.parametrize("username", ["alice", "bob-x-org", "a-b", "a.b_c", "x" * 64, "a--b"])
def test_valid_user_names_are_their_own_namespace(username):
    assert namespace_for_username(username) == username


@pytest.mark.parametrize("username, stem", [("bob@x.org", "bob-x-org"), ("a+b", "a-b"), ("Alice", "alice"),
                                            ("bob-x-org--0123abcd", "bob-x-org-0123abcd")])
def test_changed_user_names_keep_a_readable_stem_and_a_stable_suffix(username, stem):
    namespace = namespace_for_username(username)
    assert re.fullmatch(re.escape(stem) + r"--[0-9a-f]{8}", namespace), namespace
    assert namespace_for_username(username) == namespace  # stable across calls and processes

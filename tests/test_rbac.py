"""Role × ARN × permission tables (like JupyterHub's test_scopes)."""

from __future__ import annotations

import pytest

from conda_store_jupyter.auth.rbac import (
    Identity,
    Permission as P,
    arn_matches,
    effective_bindings,
    is_allowed,
    is_subset,
    normalize_bindings,
)
from conda_store_jupyter.exceptions import ValidationError

ALICE = {"alice/*": {"admin"}, "shared/*": {"viewer"}, "team-*/ml": {"developer"}}


@pytest.mark.parametrize(
    "permission, arn, expected",
    [
        (P.ENVIRONMENT_READ, "alice/demo", True),
        (P.ENVIRONMENT_DELETE, "alice/demo", True),
        (P.NAMESPACE_DELETE, "alice/", True),
        (P.ENVIRONMENT_READ, "bob/demo", False),
        (P.ENVIRONMENT_READ, "shared/x", True),
        (P.ENVIRONMENT_CREATE, "shared/x", False),
        (P.ENVIRONMENT_CREATE, "team-a/ml", True),
        (P.ENVIRONMENT_CREATE, "team-a/other", False),
        (P.BUILD_DELETE, "team-a/ml", False),
        (P.ENVIRONMENT_READ, "alicex/demo", False),  # no prefix leaks: alice/* is not alice*/*
    ],
)
def test_permission_table(permission, arn, expected):
    assert is_allowed(ALICE, permission, arn) is expected


def test_star_does_not_cross_slash():
    assert arn_matches("a*/x", "ab/x")
    assert not arn_matches("*", "a/b") or arn_matches("*/*", "a/b")
    assert not arn_matches("a/*", "a-b/c")


@pytest.mark.parametrize(
    "requested, ok",
    [
        ({"alice/*": {"viewer"}}, True),
        ({"alice/demo": {"admin"}}, True),
        ({"shared/*": {"viewer"}}, True),
        ({"shared/*": {"developer"}}, False),
        ({"*/*": {"viewer"}}, False),
        ({"bob/*": {"viewer"}}, False),
        ({"team-*/ml": {"developer"}}, True),
        ({"team-*/*": {"developer"}}, False),
    ],
)
def test_token_subset(requested, ok):
    assert is_subset(requested, ALICE) is ok


def test_normalize_rejects_bad_bindings():
    assert normalize_bindings({"a/*": ["editor"]}) == {"a/*": {"developer"}}
    for bad in ({"a": ["viewer"]}, {"a/b/c": ["viewer"]}, {"a/*": ["root"]}, {"../*": ["viewer"]}, {"a/*": "admin"}):
        with pytest.raises(ValidationError):
            normalize_bindings(bad)


def test_namespace_role_mappings_apply_to_matching_identities():
    bob = Identity(username="bob", primary_namespace="bob", role_bindings={"bob/*": {"admin"}}, authenticated=True)
    mappings = [("alice", "bob/*", "viewer"), ("alice", "carol/*", "admin")]
    eff = effective_bindings(bob, mappings)
    assert is_allowed(eff, P.ENVIRONMENT_READ, "alice/x")
    assert not is_allowed(eff, P.ENVIRONMENT_CREATE, "alice/x")
    anon = Identity(username=None, primary_namespace="default")
    assert effective_bindings(anon, [("alice", "*/*", "admin")]) == {}  # mappings never reach anonymous

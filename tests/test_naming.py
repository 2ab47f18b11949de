"""The one name grammar and build keys."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from conda_store_jupyter.exceptions import InvalidNameError
from conda_store_jupyter.naming import build_key, parse_build_key, validate_name, validate_tag


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

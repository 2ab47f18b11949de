"""On-demand image names decode strictly into match specs (pure unit tests)."""

from __future__ import annotations

import pytest

from conda_store_jupyter.exceptions import InvalidNameError
from conda_store_jupyter.naming import validate_name
from conda_store_jupyter.server.registry import decode_dynamic_segment, dynamic_environment_name


@pytest.mark.parametrize(
    "segment, spec",
    [
        ("six", "six"),
        ("python.lt.3.12", "python <3.12"),
        ("python.ge.3.11", "python >=3.11"),
        ("numpy.gt.1.0", "numpy >1.0"),
        ("hello.eq.2.0", "hello ==2.0"),
        ("typing-extensions.le.5", "typing-extensions <=5"),
        ("ruamel.yaml", "ruamel.yaml"),
    ],
)
def test_decode(segment, spec):
    assert decode_dynamic_segment(segment) == spec


@pytest.mark.parametrize("segment", ["", "..", "six.lt.", "six.xx.1", "Six", "six;rm", "six.lt.3.12.", "a" * 101,
                                     "six.lt.>3", "-six"])
def test_decode_rejects_junk(segment):
    with pytest.raises(InvalidNameError):
        decode_dynamic_segment(segment)


def test_environment_name_is_order_independent_and_valid():
    a = dynamic_environment_name(["python.lt.3.12", "six"])
    assert a == dynamic_environment_name(["six", "python.lt.3.12"])
    assert validate_name(a) == a
    long = dynamic_environment_name([f"pkg{i}.ge.1.0" for i in range(20)])
    assert long.startswith("dyn-") and validate_name(long) == long


def test_hashed_names_cannot_be_claimed_by_a_readable_name() -> None:
    """``dyn-<hash>`` is a valid single segment; before, it named itself and could share the
    environment of the set whose hashed name it is."""
    long_set = [f"package{i}.ge.1.0" for i in range(6)]  # too long to be readable
    hashed = dynamic_environment_name(long_set)
    assert hashed.startswith("dyn-")
    assert decode_dynamic_segment(hashed) == hashed  # a package name the registry accepts
    assert dynamic_environment_name([hashed]) != hashed
    assert dynamic_environment_name([hashed]).startswith("dyn-")
    assert dynamic_environment_name(["dyn-x", "six"]).startswith("dyn-")  # any readable "dyn-…"
    assert dynamic_environment_name(["dynamo"]) == "dynamo"  # only the exact prefix is hashed


@pytest.mark.parametrize("username", ["conda-store-dynamic", "Conda-Store-Dynamic", "conda@store-dynamic",
                                      "CONDA STORE DYNAMIC"])
def test_no_user_gets_the_on_demand_namespace(username) -> None:
    from conda_store_jupyter.auth.backend import namespace_for_username
    from conda_store_jupyter.exceptions import ValidationError
    from conda_store_jupyter.server.registry import Registry
    from conda_store_jupyter.server.registry_names import DYNAMIC_NAMESPACE

    assert Registry().dynamic_namespace == DYNAMIC_NAMESPACE == "conda-store-dynamic"
    if username == DYNAMIC_NAMESPACE:
        with pytest.raises(ValidationError, match="reserved for on-demand images"):
            namespace_for_username(username)
    else:  # names that had to change get a hashed suffix, so they can never be the reserved one
        assert namespace_for_username(username).startswith(DYNAMIC_NAMESPACE + "--")
    assert namespace_for_username("conda-store-dynamics") == "conda-store-dynamics"

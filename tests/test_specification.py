"""environment.yaml parsing, validation errors that name the problem, normalisation and hashing."""

from __future__ import annotations

import re

import pytest

from conda_store_jupyter.exceptions import SpecificationError
from conda_store_jupyter.schema import parse_specification

GOOD = """
name: demo
channels: [conda-forge]
dependencies:
  - python 3.11.*
  - six
  - pip:
      - tomli==2.0.1
variables: {OMP_NUM_THREADS: 1}
description: a demo
prefix: /home/alice/envs/demo
"""


def test_parse_normalises_and_splits_pip():
    spec = parse_specification(GOOD)
    assert spec.name == "demo"
    assert spec.dependencies == ["python 3.11.*", "six"]
    assert spec.pip == ["tomli==2.0.1"]
    assert spec.variables == {"OMP_NUM_THREADS": "1"}
    env = spec.to_environment_dict()
    assert env["dependencies"][-1] == {"pip": ["tomli==2.0.1"]}
    assert "prefix" not in env  # prefix is ignored


def test_sha256_is_stable_and_content_sensitive():
    a = parse_specification(GOOD)
    b = parse_specification(GOOD.replace("  - six", "  -    six   "))  # whitespace only
    c = parse_specification(GOOD.replace("six", "packaging"))
    assert a.sha256 == b.sha256 != c.sha256
    assert len(a.sha256) == 64
    assert parse_specification(a.to_yaml()).sha256 == a.sha256  # round trip


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("name: [", "invalid YAML at line 1"),
        ("- just\n- a list", "must be a mapping"),
        ("channels: []", "'name' is required"),
        ("name: ..", "name: environment name '..' is not allowed"),
        ("name: a/b", "is not allowed"),
        ("name: " + "x" * 300, "the limit is 64"),
        ("name: ok\ndependencies: [six, 'numpy>>1']", "dependencies[1]: 'numpy>>1' is not a valid conda match spec"),
        ("name: ok\ndependencies: [libgreet 1.0]", "Did you mean '==1.0' or '1.0.*'?"),
        ("name: ok\ndependencies: [{pip: ['-e .']}]", "dependencies[0].pip[0]: pip options"),
        ("name: ok\ndependencies: [{pip: ['req[']}]", "is not a valid pip requirement"),
        ("name: ok\ndependencies: [{pip: ['evil @ https://attacker.example/x.whl']}]", "direct URL requirements"),
        ("name: ok\ndependencies: [{pip: ['loc @ file:///etc']}]", "direct URL requirements"),
        ("name: ok\ndependencies: [{conda: [x]}]", "dependencies[0]: expected a match spec"),
        ("name: ok\nchannels: [evil]", "channels[0]: channel 'evil' is not allowed"),
        ("name: ok\nfoo: 1", "unknown key(s) in specification: foo"),
        ("name: ok\nvariables: {A: [1, 2]}", "variables.A: must be a string or number, got list"),
        ("a: &x [1, 2]\nb: *x", "YAML aliases (*name) are not allowed"),
        ("name: ok\nvariables: " + "[" * 5000 + "]" * 5000, "nested too deeply"),
    ],
)
def test_errors_name_the_problem(text, fragment):
    with pytest.raises(SpecificationError) as exc:
        parse_specification(text, allowed_channels=["conda-forge"])
    assert fragment in str(exc.value)


def test_oversized_and_binary_input_rejected():
    with pytest.raises(SpecificationError, match="limit"):
        parse_specification("name: x\n#" + "a" * 300_000)
    with pytest.raises(SpecificationError, match="UTF-8"):
        parse_specification(b"\xff\xfe")


def test_with_packages_adds_only_missing():
    spec = parse_specification("name: x\ndependencies: [python 3.11.*]")
    out = spec.with_packages(["python", "pip"])
    assert out.dependencies == ["python 3.11.*", "pip"]


def test_alias_bomb_is_refused_quickly():
    """A few hundred bytes of nested aliases would expand to gigabytes; refuse before expanding."""
    import time

    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    text = "name: bomb\nvariables:\n  " + "\n  ".join(levels) + "\n"
    start = time.perf_counter()
    with pytest.raises(SpecificationError, match="aliases"):
        parse_specification(text)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("text, where", [
    ('name: x\ndescription: "\\udfff"\ndependencies: [python]', "description"),
    ('name: x\nvariables: {A: "ok", B: "\\ud800"}\ndependencies: [python]', "variables.B"),
    ('name: x\ndependencies: [python, {pip: ["six", "\\udc80"]}]', "dependencies[1].pip[1]"),
    ('name: x\nprefix: "\\udfff"\ndependencies: [python]', "prefix"),
])
def test_lone_surrogates_from_yaml_escapes_are_refused(text, where):
    """YAML's "\\uXXXX" escapes can spell text no database stores (it failed only when written)."""
    with pytest.raises(SpecificationError, match=rf"^{re.escape(where)}: not valid Unicode"):
        parse_specification(text)


def test_ignored_prefix_is_a_warning_outside_the_identity():
    with_prefix = parse_specification("name: x\nprefix: /etc\ndependencies: [python]")
    plain = parse_specification("name: x\ndependencies: [python]")
    assert with_prefix.warnings == ["prefix: '/etc' is ignored; conda-store chooses where environments are installed"]
    assert plain.warnings == []
    assert with_prefix.sha256 == plain.sha256 and with_prefix.to_environment_dict() == plain.to_environment_dict()
    assert "warnings" not in with_prefix.model_dump()
    assert with_prefix.with_packages(["pip"]).warnings == with_prefix.warnings  # kept through the policy

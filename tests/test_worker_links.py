"""The environment link: ``<store>/<ns>/envs/<name>`` switched atomically (``worker/links.py``)."""

from __future__ import annotations

import os

import pytest

from conda_store_jupyter.worker.links import remove_environment_link, switch_environment_link


def test_switch_environment_link_is_atomic_and_relative(tmp_path):
    b1, b2 = tmp_path / "ns" / "build-1", tmp_path / "ns" / "build-2"
    b1.mkdir(parents=True)
    b2.mkdir()
    link = tmp_path / "ns" / "envs" / "demo"
    switch_environment_link(link, b1)
    assert os.readlink(link) == os.path.join("..", "build-1") and link.resolve() == b1
    switch_environment_link(link, b2)
    assert link.resolve() == b2
    assert sorted(p.name for p in link.parent.iterdir()) == ["demo"]  # no temp links left
    assert not remove_environment_link(link, target=b1)  # points elsewhere: kept
    assert remove_environment_link(link, target=b2) and not link.exists()


def test_switch_refuses_to_replace_a_real_directory(tmp_path):
    link = tmp_path / "envs" / "demo"
    link.mkdir(parents=True)
    with pytest.raises(FileExistsError):
        switch_environment_link(link, tmp_path)

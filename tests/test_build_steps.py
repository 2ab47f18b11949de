"""Small steps of the build pipeline that need no channel: log, symlink switch, virtual packages."""

from __future__ import annotations

import os

import pytest

from conda_store_jupyter.builder.link import remove_environment_link, switch_environment_link
from conda_store_jupyter.builder.log import BuildLog
from conda_store_jupyter.builder.solve import foreign_virtual_packages


def test_log_writes_file_and_sink_and_times_stages(tmp_path):
    seen: list[str] = []
    with BuildLog(tmp_path / "b.log", sink=seen.append) as log:
        with log.stage("solve"):
            log.write("two\nlines")
    text = (tmp_path / "b.log").read_text().splitlines()
    assert text[:3] == ["-- solve", "two", "lines"]
    assert text[3].startswith("== solve: ") and text[3].endswith(" s")
    assert seen == text
    assert [t.name for t in log.timings] == ["solve"] and log.timings[0].seconds >= 0


def test_log_failure_is_prepended_and_log_continues(tmp_path):
    seen: list[str] = []
    log = BuildLog(tmp_path / "b.log", sink=seen.append)
    log.write("progress 1")
    log.fail("the solver could not find x")
    log.write("after")
    log.close()
    assert (tmp_path / "b.log").read_text() == "BUILD FAILED: the solver could not find x\n\nprogress 1\nafter\n"
    assert seen[-2:] == ["BUILD FAILED: the solver could not find x", "after"]


def test_broken_sink_does_not_break_the_build(tmp_path):
    def sink(line: str) -> None:
        raise ConnectionError("redis went away")

    with BuildLog(tmp_path / "b.log", sink=sink) as log:
        log.write("a")
        log.write("b")
    assert (tmp_path / "b.log").read_text().splitlines()[-1] == "b"


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


@pytest.mark.parametrize(
    "platform, expected",
    [
        ("osx-arm64", {"__unix", "__osx", "__archspec"}),
        ("linux-aarch64", {"__unix", "__linux", "__glibc", "__archspec"}),
        ("win-64", {"__win", "__archspec"}),
    ],
)
def test_foreign_virtual_packages(platform, expected):
    assert {v.name.normalized for v in foreign_virtual_packages(platform)} == expected

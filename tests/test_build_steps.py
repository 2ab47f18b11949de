"""Small steps of the build pipeline that need no channel: log, virtual packages; its purity."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conda_store_jupyter.builder.log import BuildLog, final_log
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


def test_log_failure_ends_the_log_and_is_also_on_top(tmp_path):
    seen: list[str] = []
    log = BuildLog(tmp_path / "b.log", sink=seen.append)
    log.write("progress 1")
    with log.stage("solve"):
        pass
    log.fail("the solver could not find x")
    log.write("after")  # dropped: the final status stays the last line
    log.fail("a second cause")  # ignored: the first one ended the build
    log.close()
    lines = (tmp_path / "b.log").read_text().splitlines()
    final = "BUILD FAILED: the solver could not find x"
    assert lines[:3] == [final, "", "progress 1"] and lines[4].startswith("== solve: ") and lines[5:] == [final]
    assert seen == lines[2:]  # the live sink: the same lines in the same order, the summary excepted
    assert log.failure == "the solver could not find x"


def test_log_appends_to_what_the_worker_wrote(tmp_path):
    (tmp_path / "b.log").write_text("build 7 (key) on host\n")
    with BuildLog(tmp_path / "b.log", append=True) as log:
        log.write("progress")
    assert (tmp_path / "b.log").read_text() == "build 7 (key) on host\nprogress\n"


@pytest.mark.parametrize("body, summary, expected", [
    ("a\nb\n", True, "F\n\na\nb\nF\n"),
    ("a\nb", False, "a\nb\nF\n"),
    ("", True, "F\n"),  # nothing to put a summary on top of: said once
])
def test_final_log(body, summary, expected):
    assert final_log(body, "F", summary=summary) == expected


def test_the_pipeline_imports_no_database_queue_or_configuration():
    """``builder`` takes typed settings and returns typed results: importing every module of it
    (in a fresh interpreter) must not import the ORM, the configuration object or the worker."""
    import pkgutil

    import conda_store_jupyter.builder as builder

    modules = [f"conda_store_jupyter.builder.{m.name}" for m in pkgutil.iter_modules(builder.__path__)]
    assert "conda_store_jupyter.builder.pipeline" in modules and len(modules) > 8
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[:2] in (['conda_store_jupyter', 'orm'],"
            " ['conda_store_jupyter', 'app'], ['conda_store_jupyter', 'worker'], ['conda_store_jupyter', 'api'],"
            " ['conda_store_jupyter', 'server']) or m in ('sqlalchemy', 'rq', 'redis'))\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_broken_sink_does_not_break_the_build(tmp_path):
    def sink(line: str) -> None:
        raise ConnectionError("redis went away")

    with BuildLog(tmp_path / "b.log", sink=sink) as log:
        log.write("a")
        log.write("b")
    assert (tmp_path / "b.log").read_text().splitlines()[-1] == "b"


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

"""The local test channel is real: rattler solves and installs from it, and the results run.

Everything else in the test-suite builds environments from this channel, so these tests pin
down what the others rely on: package names/versions/subdirs, prefix relocation in both package
formats, a working relocatable python, cross-platform solves, the pip index, and the cache.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rattler import Gateway, MatchSpec, SourceConfig, install, solve

from conda_store_jupyter.testing.channel import LocalChannel, build_channel

REPO = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"
LINUX_SPECS = ["python", "six", "hello>=2", "greet-data"]
PY_VERSION = "{}.{}.{}".format(*sys.version_info[:3])


def _solve(channel: LocalChannel, specs: list[str], platform: str, **kwargs):
    async def run():
        # no-cache: the channel may have been rebuilt since another test read it.
        gateway = Gateway(default_config=SourceConfig(cache_action="no-cache"))
        return await solve(sources=[channel.url], specs=specs, gateway=gateway,
                           platforms=[platform, "noarch"], **kwargs)

    return asyncio.run(run())


@pytest.fixture(scope="module")
def installed_env(local_channel: LocalChannel, package_cache_dir: Path, tmp_path_factory) -> Path:
    """One linux-64 env with python, six, hello 2 and greet-data, installed by rattler."""
    prefix = tmp_path_factory.mktemp("channel-env") / "env"
    records = _solve(local_channel, LINUX_SPECS, "linux-64")
    asyncio.run(install(
        records, target_prefix=prefix, cache_dir=package_cache_dir, show_progress=False,
        # py-rattler 0.28 forgets to unwrap MatchSpec here; pass the inner object.
        requested_specs=[MatchSpec(s)._match_spec for s in LINUX_SPECS],
    ))
    return prefix


def _repodata(channel: LocalChannel, subdir: str) -> dict[str, dict]:
    data = json.loads((channel.path / subdir / "repodata.json").read_text())
    assert data["info"]["subdir"] == subdir
    return {**data["packages"], **data["packages.conda"]}


def _versions(records: dict[str, dict], name: str) -> set[str]:
    return {r["version"] for r in records.values() if r["name"] == name}


def test_repodata_lists_expected_packages(local_channel: LocalChannel) -> None:
    assert local_channel.url == local_channel.path.as_uri()
    linux = _repodata(local_channel, "linux-64")
    osx = _repodata(local_channel, "osx-arm64")
    noarch = _repodata(local_channel, "noarch")

    for records, subdir in ((linux, "linux-64"), (osx, "osx-arm64")):
        assert _versions(records, "libgreet") == {"1.0", "1.1"}
        assert _versions(records, "hello") == {"1.0", "2.0"}
        assert _versions(records, "python") == {PY_VERSION}  # made from the running interpreter
        assert all(r["subdir"] == subdir for r in records.values())
        # Both package formats are exercised on purpose.
        assert "libgreet-1.0-h0_cs.tar.bz2" in records and "libgreet-1.1-h0_cs.conda" in records
        (hello2,) = [r for r in records.values() if r["name"] == "hello" and r["version"] == "2.0"]
        assert hello2["depends"] == ["libgreet >=1.1"]

    (python,) = [r for r in linux.values() if r["name"] == "python"]
    assert python["python_site_packages_path"].endswith("/site-packages")
    assert python["size"] > 5_000_000  # the real interpreter, not the osx solve-only stub
    (osx_python,) = [r for r in osx.values() if r["name"] == "python"]
    assert osx_python["size"] < 10_000

    names = {r["name"]: r for r in noarch.values()}
    for name in ("pip", "six", "packaging", "idna", "colorama", "typing-extensions"):
        assert names[name]["noarch"] == "python", name
    assert names["greet-data"]["noarch"] == "generic"
    assert names["greet-data"]["depends"] == ["hello"]
    # Projects reserved for the pip index must not be conda packages.
    assert not {"tomli", "toolz", "attrs"} & set(names)


def test_linux_install_runs_and_is_relocated(installed_env: Path) -> None:
    out = subprocess.run(
        [installed_env / "bin" / "python", "-c", "import six, sys; print(sys.prefix)"],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    assert out == str(installed_env)

    hello = subprocess.run([installed_env / "bin" / "hello"], capture_output=True, text=True,
                           check=True).stdout
    assert "hello 2.0" in hello and "libgreet 1.1" in hello

    conf = (installed_env / "etc" / "libgreet.conf").read_text()
    assert f"prefix={installed_env}\n" in conf
    assert "anaconda1anaconda2anaconda3" not in (installed_env / "bin" / "hello").read_text()
    assert (installed_env / "share" / "greet-data" / "greetings.txt").exists()


def test_relocated_python_has_working_stdlib(installed_env: Path) -> None:
    code = (
        "import ssl, sqlite3, ctypes, json, sysconfig, sys;"
        "print(sysconfig.get_paths()['purelib']); print(sys.base_prefix)"
    )
    purelib, base = subprocess.run([installed_env / "bin" / "python", "-c", code],
                                   capture_output=True, text=True, check=True).stdout.split()
    assert purelib == str(installed_env / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                          / "site-packages")
    # Not a venv pointing back at the build machine's interpreter: a real relocated install.
    assert base == str(installed_env)


def test_hello_1_needs_no_libgreet(local_channel: LocalChannel) -> None:
    records = _solve(local_channel, ["hello <2"], "linux-64")
    assert [(r.name.normalized, str(r.version)) for r in records] == [("hello", "1.0")]


def test_osx_arm64_solves(local_channel: LocalChannel) -> None:
    records = _solve(local_channel, ["python", "six", "hello"], "osx-arm64", virtual_packages=[])
    by_name = {r.name.normalized: r for r in records}
    assert set(by_name) == {"python", "six", "hello", "libgreet"}
    assert by_name["python"].subdir == "osx-arm64"
    assert str(by_name["hello"].version) == "2.0"
    assert by_name["six"].subdir == "noarch"


def test_pip_index_installs_offline_with_uv(local_channel: LocalChannel, installed_env: Path,
                                            tmp_path: Path) -> None:
    index = (local_channel.pypi_dir.parent / "simple" / "tomli" / "index.html").read_text()
    assert "#sha256=" in index
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_NO_CONFIG": "1"}
    subprocess.run(
        [UV, "pip", "install", "--offline", "--python", installed_env / "bin" / "python",
         "--index-url", local_channel.pypi_index_url, "tomli", "toolz"],
        check=True, env=env, capture_output=True,
    )
    # --find-links on the wheel directory is the other supported way.
    subprocess.run(
        [UV, "pip", "install", "--offline", "--python", installed_env / "bin" / "python",
         "--no-index", "--find-links", local_channel.pypi_dir, "attrs"],
        check=True, env=env, capture_output=True,
    )
    out = subprocess.run(
        [installed_env / "bin" / "python", "-c", "import tomli, toolz, attrs; print(tomli.__file__)"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert out.startswith(str(installed_env / "lib"))


def test_second_build_is_cached(local_channel: LocalChannel) -> None:
    started = time.monotonic()
    again = build_channel(local_channel.path)
    assert time.monotonic() - started < 0.5
    assert again == local_channel


def test_cli_prints_url_last(local_channel: LocalChannel) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conda_store_jupyter.testing.channel", str(local_channel.path)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    last = proc.stdout.strip().splitlines()[-1]
    assert last == local_channel.url and last.startswith("file://")


def test_concurrent_builds_share_one_result(local_channel: LocalChannel, tmp_path: Path) -> None:
    """Two processes building the same new channel: both succeed, one build, no leftovers."""
    # Seed the wheel cache from the existing channel's so this test
    # needs no network.
    wheels = tmp_path / "channel.wheels"
    wheels.mkdir()
    for whl in (local_channel.path.parent / f"{local_channel.path.name}.wheels").glob("*.whl"):
        os.link(whl, wheels / whl.name)
    # --without-kernel: the locking is what is tested here; the kernel packages would add ~35% CPU.
    cmd = [sys.executable, "-m", "conda_store_jupyter.testing.channel", "--without-kernel", str(tmp_path / "channel")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
             for _ in range(2)]
    results = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert {out.strip().splitlines()[-1] for out, _ in results} == {(tmp_path / "channel").as_uri()}

    entries = sorted(p.name for p in tmp_path.iterdir())
    built = [e for e in entries if e.startswith(".channel-")]
    assert len(built) == 1, entries  # one hidden build dir, no temp dirs left behind
    assert (tmp_path / "channel").is_symlink()
    linux = _repodata(LocalChannel(tmp_path / "channel", "", "", tmp_path), "linux-64")
    assert _versions(linux, "python") == {PY_VERSION} and not _versions(linux, "ipykernel")

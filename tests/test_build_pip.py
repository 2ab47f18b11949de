"""The ``pip:`` section with the host's own uv configuration: locked, installed exactly, reinstallable.

The store names no pip source here (no ``pip_index_url``, no ``pip_find_links``), as in a default
deployment: uv's configuration on the host decides, set the way users set it (``UV_INDEX_URL``,
``UV_DEFAULT_INDEX``, a ``uv.toml`` under ``XDG_CONFIG_HOME`` or named by ``UV_CONFIG_FILE``). The
index is the local channel's PEP 503 index served over real HTTP by the test. The lockfile must
carry the URL and sha256 of every wheel as served, and reinstalling from it must give the same
distributions.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from conda_store_jupyter.builder import BuildLog, BuildPaths, BuildSettings, run_pipeline
from conda_store_jupyter.builder.lockfile import read_lockfile, records_from_lockfile
from conda_store_jupyter.builder.pip import install_locked_pip, installed_distributions, uv_environment
from conda_store_jupyter.builder.records import PipPackage, current_platform
from conda_store_jupyter.exceptions import InstallError
from conda_store_jupyter.schema import BuildArtifactType, BuildStatus, parse_specification

from .fixtures_service import make_build, wait_status
from .httpd import QuietHandler, serving

HOST = current_platform()
pytestmark = pytest.mark.skipif(HOST != "linux-64", reason="the local test channel is linux-64")

# six comes from conda (whl2conda package): the pip section's six is left to it, not reinstalled.
SPEC = "name: pipenv\ndependencies:\n  - python 3.11.*\n  - six\n  - pip:\n    - tomli\n    - toolz\n    - six\n"
PIP_LOCKED = {"tomli": "2.5.0", "toolz": "1.2.0"}


@pytest.fixture(scope="module")
def http_index(local_channel):
    """``(index URL, wheel directory, port)``: the local PEP 503 index over http://127.0.0.1."""
    with serving(QuietHandler, local_channel.pypi_dir.parent) as port:  # serves simple/ and wheels/
        yield f"http://127.0.0.1:{port}/simple/", local_channel.pypi_dir, port


@pytest.fixture
def clean_uv_environment(monkeypatch, tmp_path):
    """No uv setting from the machine running the tests; an empty user config directory."""
    import os

    for name in list(os.environ):
        if name.startswith("UV_"):
            monkeypatch.delenv(name)
    (tmp_path / "xdg").mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return monkeypatch


def configure_uv(how: str, index_url: str, monkeypatch, tmp_path: Path) -> None:
    """Point uv at ``index_url`` the way a user would, outside conda-store's configuration."""
    if how in ("UV_INDEX_URL", "UV_DEFAULT_INDEX"):
        monkeypatch.setenv(how, index_url)
    elif how == "XDG_CONFIG_HOME":
        (tmp_path / "xdg" / "uv").mkdir(parents=True)
        (tmp_path / "xdg" / "uv" / "uv.toml").write_text(f'index-url = "{index_url}"\n')
    elif how == "UV_CONFIG_FILE":
        config = tmp_path / "site-uv.toml"
        config.write_text(f'[[index]]\nurl = "{index_url}"\ndefault = true\n')
        monkeypatch.setenv("UV_CONFIG_FILE", str(config))
    else:  # pragma: no cover
        raise ValueError(how)


def _settings(local_channel, package_cache_dir: Path) -> BuildSettings:
    return BuildSettings(
        channels=(local_channel.url,),
        package_cache_directory=package_cache_dir,
        artifacts=frozenset({BuildArtifactType.LOCKFILE, BuildArtifactType.YAML}),
        timeout=300,
    )


def _build(settings: BuildSettings, out: Path, spec: str = SPEC):
    paths = BuildPaths.in_directory(out)
    with BuildLog(paths.log) as log:
        result = run_pipeline(parse_specification(spec), settings, paths, log)
    return paths, result


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_locked_from_http_index(lockfile: Path, wheels: Path, port: int) -> None:
    locked = {p.name: p for p in read_lockfile(lockfile).for_platform(HOST).pip}
    assert {n: p.version for n, p in locked.items()} == PIP_LOCKED
    for p in locked.values():
        [wheel] = wheels.glob(f"{p.name}-{p.version}-*.whl")
        assert p.url == f"http://127.0.0.1:{port}/wheels/{wheel.name}"
        assert p.sha256 == _sha256(wheel)


@pytest.mark.parametrize("how", ["UV_INDEX_URL", "UV_DEFAULT_INDEX", "XDG_CONFIG_HOME", "UV_CONFIG_FILE"])
def test_lockfile_records_files_from_the_hosts_uv_index(
    how, http_index, local_channel, package_cache_dir, clean_uv_environment, tmp_path
):
    index_url, wheels, port = http_index
    configure_uv(how, index_url, clean_uv_environment, tmp_path)
    settings = _settings(local_channel, package_cache_dir)
    assert settings.pip_index_url is None and settings.pip_find_links == ()

    paths, result = _build(settings, tmp_path / "out")

    _assert_locked_from_http_index(paths.lockfile, wheels, port)
    assert {p.name for p in result.pip_packages} == set(PIP_LOCKED)  # six stays conda's
    conda_python, pip_python = installed_distributions(paths.prefix)
    assert conda_python["six"] == "1.17.0"
    assert {n: p.version for n, p in pip_python.items()} == PIP_LOCKED
    assert "tomli==2.5.0" in paths.yaml.read_text()


def _records(prefix: Path) -> dict[str, str]:
    """``{dist-info name: RECORD}``: the sha256 of every installed file of every pip distribution."""
    _, pip = installed_distributions(prefix)
    out = {}
    for dist_info in prefix.glob("lib/python*/site-packages/*.dist-info"):
        if dist_info.name.split("-")[0].lower().replace("_", "-") in pip:
            out[dist_info.name] = "\n".join(sorted((dist_info / "RECORD").read_text().splitlines()))
    return out


def test_reinstall_from_lockfile_gives_the_same_distributions(
    http_index, local_channel, package_cache_dir, clean_uv_environment, tmp_path
):
    from rattler import install

    index_url, wheels, port = http_index
    configure_uv("UV_DEFAULT_INDEX", index_url, clean_uv_environment, tmp_path)
    settings = _settings(local_channel, package_cache_dir)
    paths, result = _build(settings, tmp_path / "out")

    locked = read_lockfile(paths.lockfile)
    prefix = tmp_path / "again"
    records = asyncio.run(records_from_lockfile(locked, settings))
    asyncio.run(install(list(records), target_prefix=prefix, cache_dir=package_cache_dir, show_progress=False))
    with BuildLog(tmp_path / "reinstall.log") as log:
        again = asyncio.run(install_locked_pip(prefix, locked.for_platform(HOST).pip, settings, log))

    assert [(p.name, p.version, p.url, p.sha256) for p in again] == [
        (p.name, p.version, p.url, p.sha256) for p in result.pip_packages
    ]
    assert installed_distributions(prefix) == installed_distributions(paths.prefix)
    assert _records(prefix) == _records(paths.prefix) and set(_records(prefix)) == {
        "tomli-2.5.0.dist-info", "toolz-1.2.0.dist-info"}


def test_reinstall_refuses_a_file_that_is_not_the_locked_one(
    http_index, local_channel, package_cache_dir, clean_uv_environment, tmp_path
):
    """The lock's sha256 is enforced: a wheel with other content under the same name is refused."""
    index_url, _, _ = http_index
    configure_uv("UV_INDEX_URL", index_url, clean_uv_environment, tmp_path)
    settings = _settings(local_channel, package_cache_dir)
    paths, _ = _build(settings, tmp_path / "out", "name: p\ndependencies: [python 3.11.*]\n")
    forged = PipPackage("tomli", "2.5.0", f"{index_url}tomli/", sha256="0" * 64)
    with BuildLog(tmp_path / "x.log") as log, pytest.raises(InstallError, match="tomli"):
        asyncio.run(install_locked_pip(paths.prefix, [forged], settings, log))
    assert "tomli" not in installed_distributions(paths.prefix)[1]


def test_pip_requirement_against_a_conda_package_is_refused(local_channel, package_cache_dir, tmp_path):
    """pip must not overwrite a conda package: a pip pin conda's version does not meet is an error."""
    spec = "name: clash\ndependencies:\n  - python 3.11.*\n  - six\n  - pip:\n    - six>=2\n"
    paths = BuildPaths.in_directory(tmp_path / "out")
    with BuildLog(paths.log) as log, pytest.raises(InstallError) as err:
        run_pipeline(parse_specification(spec), _settings(local_channel, package_cache_dir), paths, log)
    assert "'six>=2' conflicts with six 1.17.0 installed by conda" in str(err.value)


def _write_wheel(directory: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal pure-Python wheel (one module, METADATA with Requires-Dist, WHEEL, RECORD)."""
    import base64
    import zipfile

    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": b"",
        f"{info}/METADATA": "\n".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}",
                                        *(f"Requires-Dist: {r}" for r in requires)]).encode() + b"\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=').decode()},{len(v)}"
              for k, v in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for k, v in files.items():
            whl.writestr(k, v)
    return path


def test_pip_never_replaces_a_conda_package(local_channel, package_cache_dir, tmp_path):
    """A pip package's dependency on a conda-installed distribution is left to conda (as conda-lock
    does): conda's files stay, the lock has only the pip package, the log warns about the mismatch."""
    links = tmp_path / "wheels"
    links.mkdir()
    wheel = _write_wheel(links, "needsix", "1.0", ["six>=2"])
    settings = replace(_settings(local_channel, package_cache_dir), pip_find_links=(str(links),))
    paths, result = _build(settings, tmp_path / "out", "name: p\ndependencies: [python 3.11.*, six, {pip: [needsix]}]")
    assert [(p.name, p.url, p.sha256) for p in result.pip_packages] == [("needsix", wheel.as_uri(), _sha256(wheel))]
    conda, pip = installed_distributions(paths.prefix)
    assert conda["six"] == "1.17.0" and set(pip) == {"needsix"}
    assert "warning: some pip requirements are not met by the versions conda installed" in paths.log.read_text()


def test_store_pip_source_ignores_the_hosts_uv_configuration(local_channel, package_cache_dir,
                                                              clean_uv_environment, tmp_path):
    """With pip_index_url configured the build is hermetic: a host UV_INDEX_URL is not consulted."""
    clean_uv_environment.setenv("UV_INDEX_URL", "http://127.0.0.1:9/simple/")  # nothing listens there
    clean_uv_environment.setenv("UV_TARGET", str(tmp_path / "elsewhere"))
    settings = replace(_settings(local_channel, package_cache_dir), pip_index_url=local_channel.pypi_index_url)
    env = uv_environment(settings)
    assert "UV_INDEX_URL" not in env and "UV_TARGET" not in env and env["UV_NO_CONFIG"] == "1"
    paths, result = _build(settings, tmp_path / "out")
    assert {p.name: p.url for p in result.pip_packages} == {
        n: (local_channel.pypi_dir / f"{n}-{v}-py3-none-any.whl").as_uri() for n, v in PIP_LOCKED.items()}
    # without a store source, the host's index settings pass, what/where settings still do not
    host = uv_environment(_settings(local_channel, package_cache_dir))
    assert host["UV_INDEX_URL"] == "http://127.0.0.1:9/simple/" and "UV_TARGET" not in host
    assert "UV_NO_CONFIG" not in host


def test_worker_build_locks_pip_files_from_the_hosts_uv_index(
    service_factory, http_index, clean_uv_environment, tmp_path
):
    """End to end through the queue and a real worker process that has UV_INDEX_URL set."""
    from conda_store_jupyter.worker.queue import BuildQueue

    index_url, wheels, port = http_index
    configure_uv("UV_INDEX_URL", index_url, clean_uv_environment, tmp_path)
    env = service_factory(pip_index_url=None, pip_find_links=[], build_artifacts=["LOCKFILE", "YAML"])
    store = env.store
    build_id = make_build(store, SPEC)
    BuildQueue(store).enqueue_build(build_id)
    env.start_worker()  # inherits this process's environment, UV_INDEX_URL included
    status, info = wait_status(store, build_id, BuildStatus.COMPLETED, BuildStatus.FAILED, env=env)
    assert status == BuildStatus.COMPLETED, info

    from .fixtures_service import build_row

    [key] = [a.key for a in build_row(store, build_id).artifacts if a.artifact_type == BuildArtifactType.LOCKFILE]
    lockfile = tmp_path / "conda-lock.yml"
    lockfile.write_bytes(store.storage.get_bytes(key))
    _assert_locked_from_http_index(lockfile, wheels, port)

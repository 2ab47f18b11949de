"""The offline build pipeline against the real local channel: real solves, installs, uv, conda-pack.

One environment (python + six [whl2conda] + hello [native] + tomli [pip, local index], solved for
linux-64 and osx-arm64) is built once per module and inspected by several tests; failure tests
build their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from conda_store_jupyter.builder import BuildLog, BuildPaths, BuildSettings, run_pipeline
from conda_store_jupyter.builder.records import current_platform
from conda_store_jupyter.exceptions import BuildTimeoutError, InstallError, SolveError
from conda_store_jupyter.schema import BuildArtifactType, parse_specification

BIN = Path(sys.executable).parent
HOST = current_platform()

pytestmark = pytest.mark.skipif(HOST != "linux-64", reason="the local test channel has linux-64 and osx-arm64 builds")

SPEC = """\
name: demo
description: pipeline test environment
dependencies:
  - python 3.11.*
  - six
  - hello
  - pip:
    - tomli
variables:
  DEMO_FLAVOUR: vanilla
"""


def _settings(local_channel, package_cache_dir: Path, **kw) -> BuildSettings:
    base = BuildSettings(
        channels=(local_channel.url,),
        platforms=(HOST, "osx-arm64"),
        package_cache_directory=package_cache_dir,
        pip_index_url=local_channel.pypi_index_url,
        timeout=300,
    )
    return replace(base, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory, local_channel, package_cache_dir):
    out = tmp_path_factory.mktemp("build")
    spec = parse_specification(SPEC)
    paths = BuildPaths.in_directory(out)
    lines: list[str] = []
    with BuildLog(paths.log, sink=lines.append) as log:
        result = run_pipeline(spec, _settings(local_channel, package_cache_dir), paths, log)
    return spec, paths, result, lines


def _conda_meta(prefix: Path) -> dict[str, dict]:
    out = {}
    for f in (prefix / "conda-meta").glob("*.json"):
        data = json.loads(f.read_text())
        out[data["name"]] = data
    return out


def test_environment_runs(built):
    _, paths, result, _ = built
    py = paths.prefix / "bin" / "python"
    proc = subprocess.run(
        [py, "-c", "import sys, six, tomli; print(sys.prefix); print(tomli.loads('a = 1')['a'])"],
        capture_output=True, text=True, check=True,
    )
    assert proc.stdout.split() == [str(paths.prefix), "1"]
    hello = subprocess.run([paths.prefix / "bin" / "hello"], capture_output=True, text=True, check=True)
    assert hello.stdout.startswith("hello 2.0")
    # package cache shared via hardlinks: python's stdlib files are links into the cache
    assert (paths.prefix / "lib" / "python3.11" / "os.py").stat().st_nlink >= 2
    names = {p.name for p in result.packages}
    assert {"python", "six", "hello", "libgreet"} <= names
    assert [p.pin for p in result.pip_packages] == ["tomli==2.5.0"]
    assert result.size_bytes > 10_000_000
    assert json.loads((paths.prefix / "conda-meta" / "state").read_text()) == {"env_vars": {"DEMO_FLAVOUR": "vanilla"}}
    six = next(p for p in result.packages if p.name == "six")
    assert six.summary and six.sha256 and six.md5 and six.subdir == "noarch" and six.channel == result.packages[0].channel


def test_log_names_stages_with_timings(built):
    _, paths, result, lines = built
    text = paths.log.read_text()
    for stage in ("solve", "install", "pip", "lockfile+yaml", "conda-pack"):
        assert f"== {stage}: " in text
    assert [t.name for t in result.timings] == ["solve", "lockfile", "install", "pip", "lockfile+yaml", "conda-pack"]
    assert lines == text.splitlines()  # the sink saw every line the file got
    assert "+ tomli==2.5.0" in text  # uv's own output is captured


def test_lockfile_parses_and_renders(built, tmp_path):
    from conda_lock.lockfile import parse_conda_lock_file

    _, paths, result, _ = built
    lf = parse_conda_lock_file(paths.lockfile)
    assert lf.metadata.platforms == [HOST, "osx-arm64"]
    by_platform: dict[str, dict[str, object]] = {}
    for dep in lf.package:
        by_platform.setdefault(dep.platform, {})[dep.name] = dep
    host, osx = by_platform[HOST], by_platform["osx-arm64"]
    meta = _conda_meta(paths.prefix)
    assert {n for n, d in host.items() if d.manager == "conda"} == set(meta)
    for name, data in meta.items():
        assert host[name].version == data["version"] and host[name].build == data["build"]
        assert host[name].hash.sha256 == data["sha256"] and host[name].url == data["url"]
    tomli = host["tomli"]
    assert tomli.manager == "pip" and tomli.version == "2.5.0"
    assert tomli.url.endswith("tomli-2.5.0-py3-none-any.whl") and len(tomli.hash.sha256) == 64
    # second platform: solve only, its own native builds, no pip entries
    assert "/osx-arm64/" in osx["python"].url and "/osx-arm64/" in osx["hello"].url
    assert all(d.manager == "conda" for d in osx.values())
    assert not (paths.prefix / "conda-meta" / "hello-2.0-h0_cs.json").read_text().count("osx-arm64")

    proc = subprocess.run(
        [BIN / "conda-lock", "render", "-k", "explicit", "-p", HOST, "--filename-template", "out-{platform}", str(paths.lockfile)],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    explicit = (tmp_path / f"out-{HOST}").read_text()
    assert "@EXPLICIT" in explicit
    for data in meta.values():
        assert data["url"] in explicit
    assert f"# pip tomli @ {tomli.url}#sha256={tomli.hash.sha256}" in explicit


def test_archive_unpacks_elsewhere_and_runs(built, tmp_path):
    _, paths, result, _ = built
    assert result.archive == paths.archive and paths.archive.is_file()
    dest = tmp_path / "elsewhere"
    dest.mkdir()
    with tarfile.open(paths.archive) as tar:
        tar.extractall(dest, filter="data")
    env = {**os.environ, "PATH": f"{dest / 'bin'}{os.pathsep}{os.environ['PATH']}"}  # as `source bin/activate`
    subprocess.run([dest / "bin" / "conda-unpack"], env=env, check=True)
    proc = subprocess.run(
        [dest / "bin" / "python", "-c", "import sys, six, tomli; print(sys.prefix)"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert proc.stdout.strip() == str(dest)
    conf = (dest / "etc" / "libgreet.conf").read_text()
    assert f"prefix={dest}" in conf and str(paths.prefix) not in conf
    assert subprocess.run([dest / "bin" / "hello"], capture_output=True, text=True, check=True).stdout.startswith("hello 2.0")


def test_pinned_yaml_lists_every_installed_package(built):
    from packaging.utils import canonicalize_name

    spec, paths, result, _ = built
    pinned = yaml.safe_load(paths.yaml.read_text())
    assert pinned["name"] == spec.name and pinned["channels"] == [result.packages[0].channel]
    assert pinned["variables"] == {"DEMO_FLAVOUR": "vanilla"}
    conda_pins = {d for d in pinned["dependencies"] if isinstance(d, str)}
    pip_pins = next(d["pip"] for d in pinned["dependencies"] if isinstance(d, dict))
    meta = _conda_meta(paths.prefix)
    assert conda_pins == {f"{n}={d['version']}={d['build']}" for n, d in meta.items()}

    listed = subprocess.run(
        [BIN / "uv", "pip", "list", "--python", paths.prefix / "bin" / "python", "--format", "json"],
        capture_output=True, text=True, check=True,
    )
    conda_names = {canonicalize_name(n) for n in meta}
    pip_only = {f"{canonicalize_name(p['name'])}=={p['version']}" for p in json.loads(listed.stdout)} - {
        f"{canonicalize_name(p['name'])}=={p['version']}" for p in json.loads(listed.stdout) if canonicalize_name(p["name"]) in conda_names
    }
    assert set(pip_pins) == pip_only == {"tomli==2.5.0"}
    # the pinned YAML is itself a valid specification
    assert parse_specification(paths.yaml.read_text()).pip == ["tomli==2.5.0"]


def test_install_from_lockfile_without_solving(built, local_channel, package_cache_dir, tmp_path):
    import asyncio

    from rattler import install

    from conda_store_jupyter.builder.lockfile import read_lockfile, records_from_lockfile

    _, paths, _, _ = built
    locked = read_lockfile(paths.lockfile)
    assert [p.pin for p in locked.for_platform(HOST).pip] == ["tomli==2.5.0"]
    settings = _settings(local_channel, package_cache_dir)
    records = asyncio.run(records_from_lockfile(locked, settings))
    prefix = tmp_path / "from-lock"
    asyncio.run(install(list(records), target_prefix=prefix, cache_dir=package_cache_dir, show_progress=False))
    assert set(_conda_meta(prefix)) == set(_conda_meta(paths.prefix))
    assert subprocess.run([prefix / "bin" / "hello"], capture_output=True, text=True, check=True).stdout.startswith("hello 2.0")


# -- failures ------------------------------------------------------------------------------------
def _run_failing(tmp_path: Path, spec_text: str, settings: BuildSettings):
    paths = BuildPaths.in_directory(tmp_path / "out")
    with BuildLog(paths.log) as log:
        with pytest.raises(Exception) as info:
            run_pipeline(parse_specification(spec_text), settings, paths, log)
    return paths, info.value


def test_unsatisfiable_spec_names_missing_package(tmp_path, local_channel, package_cache_dir):
    spec = "name: broken\ndependencies:\n  - python 3.11.*\n  - hello\n  - no-such-package >=1\n"
    paths, err = _run_failing(tmp_path, spec, _settings(local_channel, package_cache_dir))
    assert isinstance(err, SolveError)
    assert "no-such-package" in str(err)
    assert not paths.prefix.exists()
    first = paths.log.read_text().splitlines()[0]
    assert first.startswith("BUILD FAILED:") and "no-such-package" in first


def test_conflicting_versions_are_explained(tmp_path, local_channel, package_cache_dir):
    spec = "name: conflict\ndependencies:\n  - hello 2.*\n  - libgreet ==1.0\n"
    paths, err = _run_failing(tmp_path, spec, _settings(local_channel, package_cache_dir))
    assert isinstance(err, SolveError) and "libgreet" in str(err)
    assert not paths.prefix.exists()


def test_failed_pip_install_removes_half_built_prefix(tmp_path, local_channel, package_cache_dir):
    spec = "name: badpip\ndependencies:\n  - python 3.11.*\n  - pip:\n    - not-on-the-index\n"
    paths, err = _run_failing(tmp_path, spec, _settings(local_channel, package_cache_dir))
    assert isinstance(err, InstallError)
    assert "not-on-the-index" in str(err)
    assert not paths.prefix.exists()  # the conda part was installed, then removed
    assert paths.log.read_text().startswith("BUILD FAILED: installing the pip: section failed")
    assert paths.lockfile.is_file()  # kept: it shows what was solved
    assert not paths.yaml.exists() and not paths.archive.exists()


def test_pip_section_without_python_is_refused(tmp_path, local_channel, package_cache_dir):
    spec = "name: nopython\ndependencies:\n  - hello\n  - pip:\n    - tomli\n"
    paths, err = _run_failing(tmp_path, spec, _settings(local_channel, package_cache_dir))
    assert isinstance(err, InstallError) and "python" in str(err)
    assert not paths.prefix.exists()


def test_timeout_stops_the_build(tmp_path, local_channel, package_cache_dir):
    spec = "name: slow\ndependencies:\n  - python 3.11.*\n"
    paths, err = _run_failing(tmp_path, spec, _settings(local_channel, package_cache_dir, timeout=0.0))
    assert isinstance(err, BuildTimeoutError)
    assert not paths.prefix.exists()
    assert paths.log.read_text().startswith("BUILD FAILED: the build took longer")


def test_required_and_included_packages(tmp_path, local_channel, package_cache_dir):
    settings = _settings(
        local_channel, package_cache_dir, required_packages=("python",), included_packages=("greet-data",),
        platforms=(), artifacts=frozenset({BuildArtifactType.LOCKFILE}),
    )
    paths, err = _run_failing(tmp_path, "name: noreq\ndependencies:\n  - hello\n", settings)
    assert isinstance(err, SolveError) and "python" in str(err)

    paths = BuildPaths.in_directory(tmp_path / "ok")
    with BuildLog(paths.log) as log:
        result = run_pipeline(parse_specification("name: req\ndependencies:\n  - python\n"), settings, paths, log)
    assert "greet-data" in {p.name for p in result.packages}
    assert result.archive is None and not paths.archive.exists()
    assert result.platforms == (HOST,)


def test_settings_from_store(tmp_path, local_channel):
    from conda_store_jupyter.app import CondaStore
    from conda_store_jupyter.worker.settings import settings_from_store

    store = CondaStore(
        store_directory=str(tmp_path / "store"),
        conda_default_channels=[str(local_channel.path)],
        conda_solve_platforms=["osx-arm64"],
        conda_included_packages=["greet-data"],
        build_artifacts=["LOCKFILE", "YAML"],
        pip_index_url=local_channel.pypi_index_url,
    )
    s = settings_from_store(store, parse_specification("name: x\ndependencies: [python]\n"))
    assert s.channels == (local_channel.path.as_uri(),)
    assert s.platforms == (HOST, "osx-arm64")
    assert s.package_cache_directory == tmp_path / "store" / ".pkgs"
    assert s.included_packages == ("greet-data",) and s.pip_index_url == local_channel.pypi_index_url
    assert BuildArtifactType.CONDA_PACK not in s.artifacts
    s2 = settings_from_store(store, parse_specification(f"name: x\nchannels: [{local_channel.url}]\n"))
    assert s2.channels == (local_channel.url,)


def test_prefix_that_exists_is_never_overwritten(tmp_path, local_channel, package_cache_dir):
    paths = BuildPaths.in_directory(tmp_path / "out")
    paths.prefix.mkdir(parents=True)
    (paths.prefix / "precious").write_text("keep me")
    with BuildLog(paths.log) as log, pytest.raises(InstallError, match="already exists"):
        run_pipeline(parse_specification("name: x\ndependencies: [hello]\n"), _settings(local_channel, package_cache_dir), paths, log)
    assert (paths.prefix / "precious").read_text() == "keep me"


# -- CLI -----------------------------------------------------------------------------------------
def _cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "conda_store_jupyter.builder", *map(str, args)], cwd=cwd, capture_output=True, text=True
    )


def test_cli_end_to_end(tmp_path, local_channel, package_cache_dir):
    spec = tmp_path / "environment.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    proc = _cli(
        spec, "--channel", local_channel.url, "--platform", "osx-arm64", "--pip-index-url", local_channel.pypi_index_url,
        "--package-cache", package_cache_dir, "--output", out, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["pip_packages"] == ["tomli==2.5.0"] and summary["platforms"] == [HOST, "osx-arm64"]
    for name in ("conda-lock.yml", "environment.yaml", "environment.tar.gz", "build.log"):
        assert (out / name).is_file(), name
    assert summary["prefix"] == str(out / "env") and (out / "env" / "bin" / "python").exists()
    assert "== solve:" in proc.stderr  # progress is echoed on stderr, stdout stays machine-readable


@pytest.mark.parametrize(
    "content, expected",
    [
        ("name: Bad Name\ndependencies: [python]\n", "name"),
        ("name: ok\ndependencies:\n  - python\n  - [oops\n", "invalid YAML"),
        (None, "cannot read"),
    ],
)
def test_cli_bad_spec_fails_with_one_line(tmp_path, local_channel, content, expected):
    spec = tmp_path / "environment.yaml"
    if content is not None:
        spec.write_text(content)
    proc = _cli(spec, "--channel", local_channel.url, "--output", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr
    assert proc.stdout == ""


def test_cli_unsatisfiable_fails_without_traceback(tmp_path, local_channel, package_cache_dir):
    spec = tmp_path / "environment.yaml"
    spec.write_text("name: broken\ndependencies:\n  - no-such-package\n")
    proc = _cli(spec, "-c", local_channel.url, "--package-cache", package_cache_dir, "-q", "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not solve") and "no-such-package" in last
    assert not (tmp_path / "out" / "env").exists()


def test_pip_source_found_from_find_links_directory(tmp_path, local_channel, package_cache_dir):
    """Without an index, a --find-links directory is where the file (and its hash) comes from."""
    import hashlib

    from conda_store_jupyter.builder.lockfile import read_lockfile

    settings = _settings(local_channel, package_cache_dir, pip_index_url=None, platforms=(),
                         pip_find_links=(str(local_channel.pypi_dir),), artifacts=frozenset())
    paths = BuildPaths.in_directory(tmp_path / "out")
    with BuildLog(paths.log) as log:
        run_pipeline(parse_specification("name: fl\ndependencies: [python, {pip: [tomli]}]"), settings, paths, log)
    [tomli] = read_lockfile(paths.lockfile).for_platform(HOST).pip
    wheel = local_channel.pypi_dir / "tomli-2.5.0-py3-none-any.whl"
    assert tomli.url == wheel.as_uri()
    assert tomli.sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()


# -- the channel policy: one rule at submission and at build time ----------------------------------
def test_channel_policy_compares_normalised_channels():
    from conda_store_jupyter.schema import channel_allowed

    assert channel_allowed("conda-forge", ["https://conda.anaconda.org/conda-forge/"])
    assert channel_allowed("https://conda.anaconda.org/conda-forge", ["conda-forge"])
    assert channel_allowed("team", ["https://mirror.example/team"], "https://mirror.example/")
    assert not channel_allowed("team", ["https://conda.anaconda.org/team"], "https://mirror.example")
    assert channel_allowed("/srv/channel/", ["file:///srv/channel"])
    assert not channel_allowed("evil", ["conda-forge"])
    assert not channel_allowed("https://conda.anaconda.org/conda-forge-evil", ["conda-forge"])

    # submission: the same rule, same message for a refused channel
    spec = parse_specification("name: ok\nchannels: ['https://conda.anaconda.org/conda-forge/']",
                               allowed_channels=["conda-forge"])
    assert spec.channels == ["https://conda.anaconda.org/conda-forge"]
    with pytest.raises(Exception, match=r"channels\[0\]: channel 'evil' is not allowed; allowed: conda-forge"):
        parse_specification("name: ok\nchannels: [evil]", allowed_channels=["conda-forge"])


def _store(tmp_path: Path, local_channel, package_cache_dir, **traits):
    from conda_store_jupyter.app import CondaStore

    return CondaStore(store_directory=str(tmp_path / "store"), package_cache_directory=str(package_cache_dir),
                      database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", **traits)


def test_build_refuses_a_channel_no_longer_allowed(tmp_path, local_channel, package_cache_dir):
    """Submitted while its channel was allowed; built after the store stopped allowing it: FAILED."""
    from conda_store_jupyter import api
    from conda_store_jupyter.worker.settings import settings_from_store

    then = _store(tmp_path, local_channel, package_cache_dir, conda_default_channels=[local_channel.url])
    spec = api.prepare_specification(then, f"name: hi\nchannels: [{local_channel.url}]\ndependencies: [hello]\n")
    now = _store(tmp_path, local_channel, package_cache_dir, conda_default_channels=["conda-forge"],
                 conda_allowed_channels=["conda-forge"])
    with pytest.raises(Exception, match="is not allowed"):  # a new submission is refused...
        api.prepare_specification(now, spec.to_yaml())
    paths = BuildPaths.in_directory(tmp_path / "out")
    with BuildLog(paths.log) as log, pytest.raises(SolveError) as err:  # ...and so is the build
        run_pipeline(spec, settings_from_store(now, spec), paths, log)
    line = f"channel {local_channel.url} is not allowed (conda_allowed_channels)"
    assert str(err.value) == line
    assert paths.log.read_text().splitlines()[0] == f"BUILD FAILED: {line}"
    assert not paths.prefix.exists()

    # the policy it was submitted under still builds it
    paths = BuildPaths.in_directory(tmp_path / "ok")
    with BuildLog(paths.log) as log:
        run_pipeline(spec, replace(settings_from_store(then, spec), artifacts=frozenset()), paths, log)


def test_worker_rebuild_fails_on_a_channel_no_longer_allowed(service_factory, local_channel):
    """Through the queue: a build of a stored specification whose channel the store stopped allowing."""
    from conda_store_jupyter.schema import BuildStatus
    from conda_store_jupyter.worker.logs import stored_or_live_log
    from conda_store_jupyter.worker.queue import BuildQueue

    from .fixtures_service import make_build, wait_status

    env = service_factory(conda_default_channels=["conda-forge"], conda_allowed_channels=["conda-forge"])
    build_id = make_build(env.store, f"name: hi\nchannels: [{local_channel.url}]\ndependencies: [hello]\n")
    BuildQueue(env.store).enqueue_build(build_id)
    env.start_worker()
    status, info = wait_status(env.store, build_id, BuildStatus.COMPLETED, BuildStatus.FAILED, env=env)
    line = f"channel {local_channel.url} is not allowed (conda_allowed_channels)"
    assert status == BuildStatus.FAILED and line in (info or "")
    assert f"BUILD FAILED: {line}" in stored_or_live_log(env.store, build_id)

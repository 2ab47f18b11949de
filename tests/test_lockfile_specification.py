"""Lockfiles as specifications (``is_lockfile: true``): the round trip, the CLI, and every bad lockfile.

A team reproduces an environment bit for bit on another service by downloading its lockfile and
submitting it as the specification of a new one. The round trip runs against a real server, real
redis-server and real worker processes on the local channel: build A from an environment.yaml
(conda packages and a ``pip:`` entry), download A's lockfile through the API, submit it as a
lockfile in another namespace, and build B must have exactly A's packages (names, versions,
builds, sha256 of every file) without a solve in its log. A bad lockfile is a 400 naming the
problem, before any build exists.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from traitlets.config import Config

from conda_store_jupyter.builder.pip import installed_distributions
from conda_store_jupyter.builder.records import current_platform
from conda_store_jupyter.server.testing import bearer, running_server

from .fixtures_service import wait_for
from .processes import cli_env
from .test_build_secrets import TOKEN as SECRET_TOKEN
from .test_build_secrets import secret_channel  # noqa: F401 - the fixture: the local channel behind /t/<token>/

HOST = current_platform()
pytestmark = pytest.mark.skipif(HOST != "linux-64", reason="the local test channel is linux-64")

ADMIN = "lockspec-admin-token-0123456789abcdef"
SPEC = "name: web\ndependencies:\n  - python 3.11.*\n  - six\n  - pip:\n    - toolz\n"
BUILD_TIMEOUT = 300
CONDA_STORE = Path(sys.executable).parent / "conda-store"


def _config() -> Config:
    c = Config()
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "root"}}
    return c


@pytest.fixture
def service(service_factory):
    # no conda-pack: it is the same step as for any build, and the slowest (seconds per build)
    env = service_factory(conda_solve_platforms=["linux-64", "osx-arm64"], build_artifacts=["LOCKFILE", "YAML"])
    env.start_worker()
    env.start_worker()
    with running_server(_config(), ["--config", str(env.config)]) as server:
        yield server, env


def wait_build(client: httpx.Client, build_id: int, env) -> dict:
    def done():
        data = client.get(f"build/{build_id}/").json()["data"]
        return data if data["status"] in ("COMPLETED", "FAILED", "CANCELED") else None

    return wait_for(done, BUILD_TIMEOUT, f"build {build_id}", interval=0.2)


def completed(client: httpx.Client, build_id: int, env) -> dict:
    data = wait_build(client, build_id, env)
    assert data["status"] == "COMPLETED", (data["status_info"], client.get(f"build/{build_id}/logs/").text,
                                           env.worker_logs()[-3000:])
    return data


def installed(build: dict) -> tuple[set[tuple[str, str, str, str]], dict[str, str]]:
    """The prefix's conda packages (name, version, build, sha256 of the file) and pip distributions."""
    prefix = Path(next(a["key"] for a in build["build_artifacts"] if a["artifact_type"] == "DIRECTORY"))
    conda = set()
    for meta in (prefix / "conda-meta").glob("*.json"):
        record = json.loads(meta.read_text())
        conda.add((record["name"], record["version"], record["build"], record["sha256"]))
    _, pip = installed_distributions(prefix)
    return conda, {name: p.version for name, p in pip.items()}


def locked(doc: dict, platform: str = HOST) -> set[tuple[str, str, str, str]]:
    return {(p["name"], p["version"], p["build"], p["hash"]["sha256"])
            for p in doc["package"] if p["platform"] == platform and p["manager"] == "conda"}


def test_lockfile_round_trip(service, tmp_path):
    server, env = service
    client = httpx.Client(base_url=server.api(""), headers=bearer(ADMIN), timeout=60)
    a_id = client.post("specification/", json={"specification": SPEC, "namespace": "team"}).json()["data"]["build_id"]
    a = completed(client, a_id, env)
    a_log = client.get(f"build/{a_id}/logs/").text
    assert "-- solve" in a_log  # (what B's log must not have)

    # Download A's lockfile through the API (JSON or YAML: both parse as YAML) and submit it.
    text = client.get(f"build/{a_id}/lockfile/").text
    doc = yaml.safe_load(text)
    assert {"linux-64", "osx-arm64"} <= set(doc["metadata"]["platforms"])
    r = client.post("specification/", json={"specification": text, "is_lockfile": True, "namespace": "copy",
                                            "environment_name": "web-copy", "environment_description": "A, again"})
    assert r.status_code == 200, r.text
    b_id = r.json()["data"]["build_id"]
    b = completed(client, b_id, env)

    # B has exactly A's packages: names, versions, builds and the sha256 of every file; same pip.
    a_conda, a_pip = installed(a)
    b_conda, b_pip = installed(b)
    assert b_conda == a_conda == locked(doc)
    assert b_pip == a_pip and a_pip.get("toolz")
    pip_locked = {p["name"]: p["version"] for p in doc["package"] if p["platform"] == HOST and p["manager"] == "pip"}
    assert b_pip == pip_locked
    # ... without a solve, and it says so
    b_log = client.get(f"build/{b_id}/logs/").text
    assert "-- solve" not in b_log and "without solving" in b_log, b_log
    assert "-- fetch" in b_log and "-- pip" in b_log
    # B records the same lockfile (all platforms), the pinned YAML and its packages, as any build
    assert yaml.safe_load(client.get(f"build/{b_id}/lockfile/").text) == doc
    pinned = yaml.safe_load(client.get(f"build/{b_id}/yaml/").text)
    assert pinned["name"] == "web-copy"
    assert {d for d in pinned["dependencies"] if isinstance(d, str)} == {f"{n}={v}={b}" for n, v, b, _ in a_conda}
    assert {"LOCKFILE", "YAML", "LOGS", "DIRECTORY"} <= {x["artifact_type"] for x in b["build_artifacts"]}
    names = {p["name"] for p in client.get(f"build/{b_id}/packages/", params={"size": 100}).json()["data"]}
    assert names == {n for n, *_ in a_conda}
    assert b["specification"]["is_lockfile"] is True and b["specification"]["name"] == "web-copy"
    assert a["specification"]["is_lockfile"] is False
    environment = client.get("environment/copy/web-copy/").json()["data"]
    assert environment["description"] == "A, again"

    # A rebuild of B installs the lock again (the stored lockfile, not a solve).
    rebuilt = client.put(f"build/{b_id}/").json()["data"]["build_id"]
    assert installed(completed(client, rebuilt, env))[0] == a_conda
    assert "-- solve" not in client.get(f"build/{rebuilt}/logs/").text

    # A lockfile whose hash differs from the channel's file: the build fails, naming package and hashes.
    tampered = copy.deepcopy(doc)
    six = next(p for p in tampered["package"] if p["name"] == "six" and p["platform"] == HOST)
    real = six["hash"]["sha256"]
    six["hash"]["sha256"] = real[::-1]
    r = client.post("specification/", json={"specification": json.dumps(tampered), "is_lockfile": True,
                                            "namespace": "copy", "environment_name": "tampered"})
    assert r.status_code == 200, r.text
    bad = wait_build(client, r.json()["data"]["build_id"], env)
    assert bad["status"] == "FAILED"
    assert "six" in bad["status_info"] and "sha256 mismatch" in bad["status_info"], bad["status_info"]
    assert real in bad["status_info"] and real[::-1] in bad["status_info"]

    # The CLI: `conda-store env create -f <lockfile>` recognises the lockfile by its content (here
    # the JSON form upstream serves, under the name upstream's client downloads it as).
    lockfile = tmp_path / f"build-{a_id}.lock"
    lockfile.write_text(json.dumps(doc))
    cli = cli_env(tmp_path / "xdg", CONDA_STORE_URL=server.url.rstrip("/"), CONDA_STORE_TOKEN=ADMIN)
    proc = subprocess.run([str(CONDA_STORE), "env", "create", "-f", str(lockfile), "-n", "cli/from-lock"],
                          capture_output=True, text=True, env=cli, timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "no solve" in proc.stdout.splitlines()[0] and "without solving" in proc.stdout
    cli_build = client.get("environment/cli/from-lock/").json()["data"]["current_build_id"]
    assert installed(client.get(f"build/{cli_build}/").json()["data"])[0] == a_conda

    # ... and says in one line what is wrong: no name, or a lockfile the server refuses.
    proc = subprocess.run([str(CONDA_STORE), "env", "create", "-f", str(lockfile)],
                          capture_output=True, text=True, env=cli, timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "is a lockfile" in proc.stderr and "-n [NAMESPACE/]NAME" in proc.stderr
    other = copy.deepcopy(doc)
    other["metadata"]["platforms"] = ["osx-arm64"]
    lockfile.write_text(yaml.safe_dump(other))
    proc = subprocess.run([str(CONDA_STORE), "env", "create", "-f", str(lockfile), "-n", "cli/wrong-platform"],
                          capture_output=True, text=True, env=cli, timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"this conda-store installs {HOST} environments" in proc.stderr, proc.stderr


# -- bad lockfiles: 400 at submission, naming the problem ------------------------------------------------
@pytest.fixture(scope="module")
def lock_text(local_channel, package_cache_dir, tmp_path_factory) -> str:
    """A real conda-lock file of the local channel (solved and written by the build's own steps)."""
    from conda_store_jupyter.builder.lockfile import write_lockfile
    from conda_store_jupyter.builder.records import BuildSettings, PipPackage
    from conda_store_jupyter.builder.solve import solve_specification
    from conda_store_jupyter.schema import parse_specification

    spec = parse_specification("name: x\ndependencies:\n  - python 3.11.*\n  - six\n")
    settings = BuildSettings(channels=(local_channel.url,), package_cache_directory=package_cache_dir,
                             platforms=("linux-64", "osx-arm64"))
    solved = asyncio.run(solve_specification(spec.dependencies, settings))
    pip = [PipPackage("toolz", "1.2.0", "https://files.example/toolz-1.2.0-py3-none-any.whl", "ab" * 32)]
    path = write_lockfile(tmp_path_factory.mktemp("lock") / "conda-lock.yml", spec, solved, pip)
    return path.read_text()


def _host(doc: dict, name: str) -> dict:
    return next(p for p in doc["package"] if p["platform"] == HOST and p["name"] == name)


def _bad_cases(text: str, channel: str) -> list[tuple[str, dict, str]]:
    """(what, request body changes, expected message part) for every way a lockfile can be refused."""
    doc = yaml.safe_load(text)

    def edited(change) -> str:
        d = copy.deepcopy(doc)
        change(d)
        return json.dumps(d)

    def other_channel(d):
        d["metadata"]["channels"] = [{"url": "https://evil.example/ch", "used_env_vars": []}]
        for p in d["package"]:
            if p["manager"] == "conda":
                p["url"] = "https://evil.example/ch/" + p["url"].rsplit("/", 2)[-2] + "/" + p["url"].rsplit("/", 1)[-1]

    return [
        ("environment.yaml", {"specification": "name: x\ndependencies:\n  - python\n"},
         "not a conda-lock file: this is an environment.yaml; submit it without is_lockfile"),
        ("other mapping", {"specification": "a: 1\n"}, "not a conda-lock file: expected a mapping with version"),
        ("a list", {"specification": "[1, 2]\n"}, "not a conda-lock file: expected a mapping"),
        ("bad YAML", {"specification": "version: 1\npackage: [\n"}, "the lockfile is not valid YAML or JSON at line"),
        ("version 2", {"specification": edited(lambda d: d.update(version=2))},
         "unsupported lockfile version 2: conda-lock files of version 1 are accepted"),
        ("model", {"specification": edited(lambda d: d["package"][0].pop("manager"))},
         "not a valid conda-lock file: package[0].manager: Field required"),
        ("platform", {"specification": edited(lambda d: d["metadata"].update(platforms=["osx-arm64"]))},
         f"metadata.platforms: the lockfile is for osx-arm64; this conda-store installs {HOST} environments"),
        ("no sha256", {"specification": edited(lambda d: _host(d, "six")["hash"].pop("sha256"))},
         "conda): no sha256 hash; every file installed from a lockfile must be pinned by its sha256"),
        ("pip without sha256", {"specification": edited(lambda d: _host(d, "toolz")["hash"].pop("sha256"))},
         "(toolz 1.2.0, pip): no sha256 hash"),
        ("bad sha256", {"specification": edited(lambda d: _host(d, "six")["hash"].update(sha256="xyz"))},
         "hash.sha256 'xyz' is not 64 hex digits"),
        ("disallowed channel", {"specification": edited(other_channel)},
         f"metadata.channels[0]: channel 'https://evil.example/ch' is not allowed; allowed: {channel.rstrip('/')}"),
        ("url outside the channels", {"specification": edited(
            lambda d: _host(d, "six").update(url="https://evil.example/six-1.0-0.conda"))},
         "url 'https://evil.example/six-1.0-0.conda' is not in one of the lockfile's channels"),
        ("no name", {"environment_name": None}, "environment_name is required with is_lockfile"),
        ("bad name", {"environment_name": "no spaces"}, "environment_name 'no spaces' is not allowed"),
        ("bad description", {"environment_description": 3}, "environment_description must be a string"),
        ("is_lockfile not a bool", {"is_lockfile": "yes"}, "is_lockfile must be true or false"),
        ("empty", {"specification": ""}, "'specification' is required: the conda-lock file"),
    ]


def test_bad_lockfiles_are_400s(service_factory, lock_text, local_channel):
    env = service_factory(conda_included_packages=["six", "hello"])  # no workers: nothing may be queued
    with running_server(_config(), ["--config", str(env.config)]) as server:
        client = httpx.Client(base_url=server.api(""), headers=bearer(ADMIN), timeout=60)
        # the fixture's lockfile itself is accepted (so each refusal below is the edit's doing); what
        # the store adds to every solve is not added to a lock, and the answer says so
        ok = client.post("specification/", json={"specification": lock_text, "is_lockfile": True,
                                                 "environment_name": "fine"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["message"] == ("warning: conda_included_packages hello are not added: a lockfile is "
                                        "installed exactly as locked")
        for what, change, message in _bad_cases(lock_text, local_channel.url):
            body = {"specification": lock_text, "is_lockfile": True, "namespace": "team", "environment_name": "x",
                    **change}
            body = {k: v for k, v in body.items() if v is not None}
            r = client.post("specification/", json=body)
            assert r.status_code == 400, (what, r.status_code, r.text)
            assert message in r.json()["message"], (what, r.json()["message"])
        # nothing but the accepted one was registered
        assert [e["name"] for e in client.get("environment/").json()["data"]] == ["fine"]


def test_a_file_that_does_not_hash_as_locked_fails_the_build(lock_text, local_channel, tmp_path):
    """A channel serving another file under the locked name and hashes (its repodata unchanged):
    the build fails before installing anything, naming the package and both hashes. py-rattler
    checks what it downloads over HTTP itself, but copies ``file://`` packages unchecked."""
    from conda_store_jupyter.builder import BuildLog, BuildPaths, BuildSettings
    from conda_store_jupyter.builder.from_lock import run_lock_pipeline
    from conda_store_jupyter.exceptions import InstallError
    from conda_store_jupyter.lockspec import parse_lockfile_specification
    from conda_store_jupyter.schema import BuildArtifactType

    channel = tmp_path / "channel"
    for subdir in ("noarch", HOST):
        (channel / subdir).mkdir(parents=True)
        for f in (local_channel.path / subdir).iterdir():
            (channel / subdir / f.name).symlink_to(f)
    [six] = (channel / "noarch").glob("six-*.conda")
    six.unlink()
    six.write_bytes(b"not six")
    text = lock_text.replace(local_channel.url.rstrip("/"), channel.as_uri())
    lock = parse_lockfile_specification(text, name="tampered", platform=HOST, allowed_channels=[channel.as_uri()])
    settings = BuildSettings(channels=(channel.as_uri(),), package_cache_directory=tmp_path / "pkgs", timeout=120,
                             artifacts=frozenset({BuildArtifactType.LOCKFILE, BuildArtifactType.YAML}))
    paths = BuildPaths.in_directory(tmp_path / "out")
    with BuildLog(paths.log) as log, pytest.raises(InstallError) as failed:
        run_lock_pipeline(lock, settings, paths, log)
    locked_sha256 = _host(yaml.safe_load(lock_text), "six")["hash"]["sha256"]
    assert f"the file's sha256 is {hashlib.sha256(b'not six').hexdigest()}, the lockfile has {locked_sha256}" \
        in str(failed.value)
    assert str(failed.value).startswith("package file(s) do not match the lockfile: six=")
    assert not paths.prefix.exists() and not (tmp_path / "pkgs" / six.name.removesuffix(".conda")).exists()
    assert "-- solve" not in paths.log.read_text()


def test_required_packages_must_be_locked(lock_text):
    from conda_store_jupyter.exceptions import SpecificationError
    from conda_store_jupyter.lockspec import parse_lockfile_specification

    lock = parse_lockfile_specification(lock_text, name="x", platform=HOST, required_packages=["python", "six"])
    assert {f.name for f in lock.files(HOST)} >= {"python", "six", "toolz"}
    assert lock.sha256 == parse_lockfile_specification(json.dumps(yaml.safe_load(lock_text)), name="x",
                                                       platform=HOST).sha256  # YAML or JSON: one identity
    assert lock.sha256 != parse_lockfile_specification(lock_text, name="y", platform=HOST).sha256
    # an optional extra is not installed, as conda-lock install leaves extras out by default
    doc = yaml.safe_load(lock_text)
    _host(doc, "six").update(category="docs", optional=True)
    assert "six" not in {f.name for f in parse_lockfile_specification(doc, name="x", platform=HOST).files(HOST)}
    with pytest.raises(SpecificationError, match="lacks package.s. required for every environment by this "
                                                 "conda-store: hello$"):
        parse_lockfile_specification(lock_text, name="x", platform=HOST, required_packages=["python", "hello"])


def test_a_lockfile_of_a_channel_with_a_token_reinstalls(secret_channel, package_cache_dir, tmp_path):
    """Lockfiles record channels without their credentials (``/t/***/``); submitted back to the store
    that has the channel with its token, the lock is accepted and installs through the real URL."""
    from conda_store_jupyter.builder import BuildLog, BuildPaths, BuildSettings, run_pipeline
    from conda_store_jupyter.builder.from_lock import run_lock_pipeline
    from conda_store_jupyter.lockspec import parse_lockfile_specification
    from conda_store_jupyter.schema import BuildArtifactType, parse_specification

    artifacts = frozenset({BuildArtifactType.LOCKFILE, BuildArtifactType.YAML})
    settings = BuildSettings(channels=(secret_channel,), allowed_channels=(secret_channel,), timeout=300,
                             package_cache_directory=package_cache_dir, artifacts=artifacts)
    first = BuildPaths.in_directory(tmp_path / "a")
    with BuildLog(first.log) as log:
        run_pipeline(parse_specification("name: secret\ndependencies: [hello >=2]"), settings, first, log)
    text = first.lockfile.read_text()
    assert SECRET_TOKEN not in text and "/t/***/ch" in text

    lock = parse_lockfile_specification(text, name="secret", platform=HOST, allowed_channels=[secret_channel])
    assert lock.channels == [secret_channel.replace(SECRET_TOKEN, "***")]
    again = BuildPaths.in_directory(tmp_path / "b")
    lock_settings = BuildSettings(channels=tuple(lock.channels), allowed_channels=(secret_channel,), timeout=300,
                                  package_cache_directory=package_cache_dir, artifacts=artifacts)
    with BuildLog(again.log) as log:
        result = run_lock_pipeline(lock, lock_settings, again, log)
    assert {p.pin for p in result.packages} == {p.pin for p in lock.files(HOST)}
    out = subprocess.run([again.prefix / "bin" / "hello"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("hello 2.0")
    assert SECRET_TOKEN not in again.log.read_text() + again.yaml.read_text() + again.lockfile.read_text()

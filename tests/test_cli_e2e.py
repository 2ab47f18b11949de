"""The ``conda-store`` CLI end to end against a real ``conda-store-server --standalone``.

One server per module (real tornado app, SQLite, private redis-server, real worker processes,
the local test channel), mounted under ``/services/conda-store/`` like a JupyterHub service, so
the same server also checks JupyterHub discovery (``JUPYTERHUB_API_URL`` → service URL) and the
hub token scheme (``Authorization: token ...``). The CLI always runs as a subprocess, exactly
as a user would run it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from conda_store_jupyter.builder.records import current_platform
from conda_store_jupyter.server.testing import bearer
from conda_store_jupyter.testing.config import local_channel_traits, write_config

from .processes import cli_env, free_port, stop_process, wait_for

pytestmark = pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64")

BIN = Path(sys.executable).parent
CONDA_STORE = BIN / "conda-store"
ADMIN = "cli-e2e-admin-token-0123456789abcdef"
OUTSIDER = "cli-e2e-outsider-token-0123456789abc"  # admin of its own namespace only
PREFIX = "/services/conda-store/"
SPEC = "name: py\ndescription: cli e2e\ndependencies:\n  - python 3.11.*\n  - hello\n"


@dataclass
class Server:
    url: str  # with the prefix, no trailing slash
    port: int
    tmp: Path
    log: Path

    def env(self, token: str | None = ADMIN, **extra: str) -> dict[str, str]:
        """A clean environment for the CLI: only what the test sets."""
        auth = {"CONDA_STORE_TOKEN": token} if token else {}
        return cli_env(self.tmp / "xdg", **{"CONDA_STORE_URL": self.url, **auth, **extra})

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([str(CONDA_STORE), *args], capture_output=True, text=True,
                              env=self.env() if env is None else env, timeout=timeout, **kw)

    def submit(self, spec: str, namespace: str = "team") -> int:
        resp = httpx.post(f"{self.url}/api/v1/specification/", json={"namespace": namespace, "specification": spec},
                          headers=bearer(ADMIN), timeout=60)
        assert resp.status_code == 200, resp.text
        return int(resp.json()["data"]["build_id"])


def _one_line_error(proc: subprocess.CompletedProcess, code: int = 1) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("conda-store: error: "), proc.stderr
    return proc.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory, local_channel, package_cache_dir):
    tmp = tmp_path_factory.mktemp("cli-e2e")
    config = tmp / "conda_store_config.py"
    write_config(
        config,
        {"store_directory": str(tmp / "store"), **local_channel_traits(local_channel, package_cache_dir),
         "conda_solve_platforms": ["linux-64"], "build_artifacts": ["LOCKFILE", "YAML", "CONDA_PACK"]},
        AuthenticationBackend={
            "authenticator_class": "conda_store_jupyter.auth.backend.DummyAuthenticator",
            "predefined_tokens": {
                ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "ci-admin"},
                OUTSIDER: {"primary_namespace": "outsider", "role_bindings": {"outsider/*": ["admin"]}},
            },
        },
        DummyAuthenticator={"password": "cli-e2e-password"},
    )
    port = free_port()
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "conda-store-server"), "--standalone", f"--config={config}", f"--port={port}",
             f"--url-prefix={PREFIX}", "--workers=1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}{PREFIX.rstrip('/')}"
    try:
        wait_for(lambda: httpx.get(f"{url}/api/v1/", timeout=2).status_code == 200, 180, "conda-store-server to answer",
                 0.3, proc=proc, log=log, ignore=httpx.HTTPError)
        yield Server(url=url, port=port, tmp=tmp, log=log)
    finally:
        stop_process(proc, group=True)  # the group we created with start_new_session


@pytest.fixture(scope="module")
def build_id(server) -> int:
    """team/py built through the real queue; `wait --artifact archive` is the first CLI check."""
    build = server.submit(SPEC)
    proc = server.cli("wait", "team/py", "--artifact", "archive", "--timeout", "900", "--interval", "0.5", timeout=960)
    assert proc.returncode == 0, proc.stderr + "\n" + server.log.read_text()[-3000:]
    assert proc.stdout == f"build {build} COMPLETED (archive available)\n"
    return build


# --------------------------------------------------------------------------- info / token


def test_info_with_token(server, build_id):
    proc = server.cli("info")
    assert proc.returncode == 0, proc.stderr
    assert "authenticated: yes" in proc.stdout and "primary namespace: team" in proc.stdout
    assert "environment::read" in proc.stdout or "environment::…" in proc.stdout


def test_info_from_jupyterhub_environment_only(server, build_id):
    """Zero setup: only the hub's variables; URL derived, token sent as 'token <hub token>'."""
    env = server.env(token=None, CONDA_STORE_URL=None, JUPYTERHUB_API_URL=f"http://127.0.0.1:{server.port}/hub/api",
                     JUPYTERHUB_API_TOKEN=ADMIN)
    proc = server.cli("info", env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"{server.url}" in proc.stdout and "JupyterHub" in proc.stdout
    assert "authenticated: yes" in proc.stdout
    run = server.cli("run", "team/py", "--", "python", "-c", "print(42)", env=env)
    assert (run.returncode, run.stdout) == (0, "42\n"), run.stderr


def test_anonymous_info(server):
    proc = server.cli("info", env=server.env(token=None))
    assert proc.returncode == 0, proc.stderr
    assert "authenticated: no" in proc.stdout


def test_basic_auth_logs_in(server, build_id):
    env = server.env(token=None, CONDA_STORE_USERNAME="alice", CONDA_STORE_PASSWORD="cli-e2e-password")
    proc = server.cli("info", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "authenticated: yes" in proc.stdout and "primary namespace: alice" in proc.stdout
    assert server.cli("--auth", "basic", "list", "namespace", env=env).returncode == 0
    bad = server.cli("info", env={**env, "CONDA_STORE_PASSWORD": "wrong"})
    assert "login as 'alice' failed" in _one_line_error(bad)


def test_token_is_narrower(server, build_id):
    proc = server.cli("token", "--namespace", "team", "--role-binding", "team/py=viewer", "--expiration", "1h")
    assert proc.returncode == 0, proc.stderr
    narrow = proc.stdout.strip()
    assert narrow and "\n" not in narrow
    info = server.cli("info", env=server.env(token=narrow))
    assert info.returncode == 0 and "authenticated: yes" in info.stdout
    assert "environment::delete" not in info.stdout
    # a narrow token cannot mint a wider one
    wider = server.cli("token", "--role-binding", "*/*=admin", env=server.env(token=narrow))
    _one_line_error(wider)


# --------------------------------------------------------------------------- list


def test_list_json_and_table(server, build_id):
    ns = server.cli("list", "namespace", "--output", "json")
    assert ns.returncode == 0, ns.stderr
    assert "team" in {n["name"] for n in json.loads(ns.stdout)}
    envs = json.loads(server.cli("list", "environment", "--namespace", "team", "--output", "json").stdout)
    [env] = [e for e in envs if e["name"] == "py"]
    assert env["current_build_id"] == build_id
    builds = json.loads(server.cli("list", "build", "--status", "COMPLETED", "--output", "json").stdout)
    assert build_id in {b["id"] for b in builds}
    table = server.cli("list", "build", "--namespace", "team")
    assert table.returncode == 0 and "team/py" in table.stdout and "COMPLETED" in table.stdout


def test_list_fetches_every_page(server, build_id):
    # more namespaces than one page of the CLI (100) would hold is slow to make; check paging
    # logic against the server with pages of one instead, through the client API itself.
    from conda_store_jupyter.cli._client import Client
    from conda_store_jupyter.cli._config import resolve_config

    cfg = resolve_config(url=server.url, environ={"CONDA_STORE_TOKEN": ADMIN})
    with Client(cfg) as client:
        everything = client.paginate("/api/v1/namespace/", size=100)
        one_by_one = client.paginate("/api/v1/namespace/", size=1)
    assert len(everything) >= 1 and [n["id"] for n in one_by_one] == [n["id"] for n in everything]


# --------------------------------------------------------------------------- download / solve


@pytest.mark.parametrize("artifact", ["lockfile", "yaml", "logs", "archive"])
def test_download(server, build_id, artifact, tmp_path):
    out = tmp_path / f"artifact-{artifact}"
    proc = server.cli("download", f"team/py:{build_id}", "--artifact", artifact, "--output-filename", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out) and out.stat().st_size > 0
    if artifact == "yaml":
        assert any(str(d).startswith("hello") for d in yaml.safe_load(out.read_text())["dependencies"])
    if artifact == "archive":
        with tarfile.open(out) as tar:
            assert "bin/conda-unpack" in tar.getnames()


def test_download_default_name(server, build_id, tmp_path):
    proc = server.cli("download", str(build_id), "--artifact", "yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == tmp_path / f"build-{build_id}.yaml"


def test_solve(server, tmp_path, local_channel):
    spec = tmp_path / "environment.yaml"
    spec.write_text(f"name: s\nchannels: [{local_channel.url}]\ndependencies:\n  - hello\n")
    proc = server.cli("solve", str(spec), "--output", "json")
    assert proc.returncode == 0, proc.stderr
    assert "hello" in {p["name"] for p in json.loads(proc.stdout)}
    table = server.cli("solve", str(spec))
    assert table.returncode == 0 and "hello" in table.stdout and "libgreet" in table.stdout
    spec.write_text("name: s\ndependencies:\n  - hello\n  - no-such-package\n")
    _one_line_error(server.cli("solve", str(spec)))


# --------------------------------------------------------------------------- run / shebang


def test_run_prints_and_propagates_exit_code(server, build_id):
    proc = server.cli("run", "team/py", "--", "python", "-c", "print(42)")
    assert (proc.returncode, proc.stdout) == (0, "42\n"), proc.stderr
    proc = server.cli("run", "team/py", "--", "python", "-c", "raise SystemExit(3)")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    # every URI form reaches the same cached prefix, and only one copy is ever unpacked
    for uri in (str(build_id), f"team/py:{build_id}"):
        proc = server.cli("run", uri, "--", "python", "-c", "import sys; print(sys.prefix)")
        assert proc.returncode == 0, proc.stderr
    entries = [p for p in (server.tmp / "xdg" / "conda-store").glob(f"*/{build_id}/*") if not p.name.startswith(".")]
    assert len(entries) == 1 and proc.stdout.strip() == str(entries[0])


def test_run_default_command_is_python(server, build_id):
    proc = server.cli("run", "team/py", input="import sys; print(sys.version_info[:2])\n")
    assert (proc.returncode, proc.stdout) == (0, "(3, 11)\n"), proc.stderr


def test_shebang_script(server, build_id, tmp_path):
    script = tmp_path / "tool.py"
    script.write_text(
        "#!/usr/bin/env conda-store\n"
        "#! conda-store run team/py -- python\n"
        "import os, sys\n"
        "print(sys.prefix == os.environ['CONDA_PREFIX'], sys.argv[1:])\n"
        "raise SystemExit(len(sys.argv))\n"
    )
    script.chmod(0o755)
    env = server.env()
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # /usr/bin/env must find conda-store
    proc = subprocess.run([str(script), "x", "y z"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "True ['x', 'y z']\n"


# --------------------------------------------------------------------------- errors


def test_errors_are_one_line(server, build_id):
    assert "invalid build URI" in _one_line_error(server.cli("run", "Team/py"))
    assert "not found" in _one_line_error(server.cli("download", "987654", "--artifact", "yaml"))
    assert "not found" in _one_line_error(server.cli("run", "team/nope"))
    assert "not found" in _one_line_error(server.cli("wait", "987654"))
    denied = _one_line_error(server.cli("run", "team/py", env=server.env(token=OUTSIDER)))
    assert "permission denied" in denied or "not found" in denied
    assert "not found" in _one_line_error(server.cli("run", f"team/other:{build_id}"))


def test_wrong_build_for_environment(server, build_id):
    other = server.submit(SPEC.replace("name: py", "name: py2"))
    err = _one_line_error(server.cli("run", f"team/py:{other}"))
    assert "does not belong" in err


def test_server_down(server):
    port = free_port()
    err = _one_line_error(server.cli("list", "namespace", env=server.env(CONDA_STORE_URL=f"http://127.0.0.1:{port}")))
    assert "cannot reach conda-store" in err


def test_wait_timeout_and_failure(server, build_id):
    queued = server.submit(SPEC.replace("name: py", "name: slow").replace("  - hello\n", "  - hello\n  - six\n"))
    err = _one_line_error(server.cli("wait", str(queued), "--timeout", "0"), code=124)
    assert "timed out" in err
    failing = server.submit("name: broken\ndependencies:\n  - hello >=999\n")
    err = _one_line_error(server.cli("wait", str(failing), "--timeout", "600", "--interval", "0.5", timeout=660))
    assert "FAILED" in err


# --------------------------------------------------------------------------- invalid credentials


@pytest.mark.parametrize("command", [("info",), ("list", "environment"), ("run", "team/py", "--", "true"),
                                     ("logs", "1"), ("wait", "1")])
def test_invalid_token_is_one_line_error(server, command):
    """``CONDA_STORE_TOKEN=typo conda-store info`` printed ``authenticated: no`` and exited 0."""
    err = _one_line_error(server.cli(*command, env=server.env(token="typo")))
    assert "authentication failed with the credentials from CONDA_STORE_TOKEN: invalid token: " \
           "this server does not know it" in err, err
    assert "set CONDA_STORE_TOKEN" not in err


def test_revoked_token_says_revoked(server):
    token = server.cli("token", "--expiration", "1h").stdout.strip()
    assert httpx.delete(f"{server.url}/api/v1/token/", headers=bearer(token), timeout=30).status_code == 200
    err = _one_line_error(server.cli("info", env=server.env(token=token)))
    assert "invalid token: it was revoked on" in err


# --------------------------------------------------------------------------- env create / update, logs


def test_env_create_update_follow_the_build(server, build_id, tmp_path):
    spec = tmp_path / "environment.yaml"
    spec.write_text("name: made\ndependencies:\n  - hello\n")
    proc = server.cli("env", "create", "-f", str(spec), "-n", "team/made", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    created = int(lines[0].split("build ")[1].split()[0])
    assert lines[0] == f"team/made: build {created} submitted"
    assert "-- solve" in lines and "-- install" in lines  # the live log, step by step
    assert lines[-1] == f"team/made: build {created} COMPLETED"
    # the environment exists now: create refuses, update builds a new version
    err = _one_line_error(server.cli("env", "create", "-f", str(spec), "-n", "team/made"))
    assert "already exists" in err and "conda-store env update" in err
    spec.write_text("name: made\ndependencies:\n  - hello\n  - libgreet\n")
    proc = server.cli("env", "update", "-f", str(spec), "-n", "team/made", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].endswith("COMPLETED")
    env = httpx.get(f"{server.url}/api/v1/environment/team/made/", headers=bearer(ADMIN), timeout=30).json()["data"]
    assert env["current_build_id"] > created
    err = _one_line_error(server.cli("env", "update", "-f", str(spec), "-n", "team/never-made"))
    assert "does not exist" in err and "conda-store env create" in err
    # no -n: the file's name in the caller's primary namespace (team)
    spec.write_text("name: named-by-file\ndependencies:\n  - hello\n")
    proc = server.cli("env", "create", "-f", str(spec), "--no-follow")
    assert proc.returncode == 0 and proc.stdout.startswith("team/named-by-file: build "), proc.stderr


def test_failed_build_exit_1_with_cause_and_its_log(server, build_id, tmp_path):
    spec = tmp_path / "environment.yaml"
    spec.write_text("name: doomed\ndependencies:\n  - hello >=999\n")
    proc = server.cli("env", "create", "-f", str(spec), "-n", "team/doomed", timeout=600)
    failed = int(proc.stdout.splitlines()[0].split("build ")[1].split()[0])
    err = _one_line_error(proc)
    assert f"build {failed} of team/doomed FAILED: " in err and f"(its log: conda-store logs {failed})" in err
    # run used to suggest `conda-store wait N --artifact archive`, which can only fail
    err = _one_line_error(server.cli("run", str(failed)))
    assert f"build {failed} FAILED" in err and f"conda-store logs {failed}" in err and "wait" not in err
    err = _one_line_error(server.cli("run", "team/doomed"))
    assert f"its newest build {failed} FAILED" in err and f"conda-store logs {failed}" in err
    for args in (("logs", str(failed)), ("logs", "team/doomed"), ("logs", str(failed), "--follow")):
        log = server.cli(*args)
        assert log.returncode == 0, log.stderr
        assert "hello >=999" in log.stdout and "-- solve" in log.stdout, args


def test_logs_follow_a_running_build(server, build_id):
    building = server.submit("name: followed\ndependencies:\n  - python 3.11.*\n  - six\n")
    proc = server.cli("logs", str(building), "--follow", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "-- solve" in proc.stdout and "BUILD COMPLETED" in proc.stdout.splitlines()[-1] or \
        "COMPLETED" in proc.stdout, proc.stdout[-2000:]
    whole = server.cli("logs", str(building))
    stored, followed = whole.stdout.strip().splitlines(), proc.stdout.strip().splitlines()
    assert stored[:len(followed)] == followed
    # What follows COMPLETED in the stored log: the sections the artifact jobs append (archive, image).
    rest = stored[len(followed):]
    assert not rest or (rest[0] == "" and rest[1] in ("-- conda-pack", "-- docker image")), rest


def test_wait_shows_the_current_step(server, build_id):
    """On a terminal, ``wait`` shows the step the build is in (from its live log), not just a spinner."""
    import pty
    import select

    waited = server.submit("name: stepped\ndependencies:\n  - python 3.11.*\n  - packaging\n")
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([str(CONDA_STORE), "wait", str(waited)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=terminal, env={**server.env(), "TERM": "xterm"})
    os.close(terminal)
    screen = b""
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 600)
            if not ready:
                break
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        assert proc.wait(60) == 0
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
    text = screen.decode(errors="replace")
    steps = set(re.findall(rf"build {waited}: BUILDING, ([a-z][a-z+ -]*[a-z])", text))
    assert steps and steps <= {"solve", "lockfile", "install", "pip", "lockfile+yaml", "conda-pack",
                               "store artifacts"}, text[-3000:]
    assert proc.stdout.read().decode() == f"build {waited} COMPLETED\n"

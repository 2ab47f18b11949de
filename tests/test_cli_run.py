"""``conda-store run`` without a server: safe extraction, the cache, activation and exec.

Hostile archives are made by hand with ``tarfile``; the good archive is a real conda-pack of a
real environment built by the pipeline from the local test channel.
"""

from __future__ import annotations

import http.server
import io
import json
import re
import subprocess
import sys
import tarfile
import textwrap
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from conda_store_jupyter.cli._errors import CLIError
from conda_store_jupyter.cli._extract import safe_extract
from conda_store_jupyter.cli._run import (
    MARKER,
    activated_environ,
    build_dir,
    build_identity,
    build_key,
    find_cached,
    identity_matches,
    install_archive,
)

from .archives import write_tar
from .processes import cli_env

CONDA_STORE = Path(sys.executable).parent / "conda-store"

# ------------------------------------------------------------------------------ hostile archives


_tar = write_tar


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _special(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


def _dev(name: str) -> tarfile.TarInfo:
    info = _special(name, tarfile.CHRTYPE)
    info.devmajor, info.devminor = 1, 3
    return info


HOSTILE = {
    "absolute path": ([_file("/tmp/conda-store-evil-abs")], "absolute path"),
    "dotdot": ([_file("../evil")], "contains '..'"),
    "nested dotdot": ([_file("lib/../../evil")], "contains '..'"),
    "symlink absolute": ([_link("bin/passwd", "/etc/passwd", tarfile.SYMTYPE)], "absolute path"),
    "symlink outside": ([_link("bin/up", "../../evil", tarfile.SYMTYPE)], "points outside"),
    "symlink to parent dir": ([_link("up", "..", tarfile.SYMTYPE), _file("up/evil")], "points outside"),
    "hardlink outside": ([_link("hl", "../evil", tarfile.LNKTYPE)], "points outside"),
    "hardlink absolute": ([_link("hl", "/etc/passwd", tarfile.LNKTYPE)], "absolute path"),
    "device": ([_dev("dev/mem")], "special file"),
    "fifo": ([_special("pipe", tarfile.FIFOTYPE)], "special file"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused(case, tmp_path):
    members, needle = HOSTILE[case]
    archive = _tar(tmp_path / "bad.tar.gz", [_file("ok.txt"), *members])
    dest = tmp_path / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(CLIError) as err:
        safe_extract(archive, dest)
    assert "unsafe archive" in str(err.value) and needle in str(err.value)
    # Nothing escaped: no "evil" anywhere above dest, and no absolute write.
    assert not list((tmp_path).rglob("evil")) and not Path("/tmp/conda-store-evil-abs").exists()


def test_link_checks_do_not_refuse_links_inside(tmp_path):
    members = [
        _file("lib/libx.so.1"),
        _link("lib/libx.so", "libx.so.1", tarfile.SYMTYPE),
        _link("bin/sub", "../lib", tarfile.SYMTYPE),
        _link("bin/hard", "lib/libx.so.1", tarfile.LNKTYPE),
        _link("self", ".", tarfile.SYMTYPE),
    ]
    archive = _tar(tmp_path / "ok.tar", members, compress=False)
    dest = tmp_path / "dest"
    dest.mkdir()
    safe_extract(archive, dest)
    assert (dest / "bin" / "sub" / "libx.so").read_bytes() == b"evil\n"
    assert (dest / "bin" / "hard").stat().st_ino == (dest / "lib" / "libx.so.1").stat().st_ino


def test_the_stdlib_filter_is_a_second_line_of_defence(tmp_path, monkeypatch):
    """With our own check disabled, filter='data' still refuses an escaping link."""
    from conda_store_jupyter.cli._extract import ArchiveNamespace

    monkeypatch.setattr(ArchiveNamespace, "check", lambda self, member: None)
    archive = _tar(tmp_path / "bad.tar.gz", [_link("bin/up", "../../evil", tarfile.SYMTYPE)])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(CLIError, match="unsafe archive"):
        safe_extract(archive, dest)


def test_corrupt_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(CLIError, match="cannot extract"):
        safe_extract(bad, dest)


def test_failed_install_leaves_nothing_that_looks_cached(tmp_path):
    archive = _tar(tmp_path / "bad.tar.gz", [_file("ok"), _file("../evil")])
    directory = build_dir("srv", 5, tmp_path / "cache")
    directory.mkdir(parents=True)
    with pytest.raises(CLIError):
        install_archive(archive, "ab" * 32, 5, directory)
    assert list(directory.iterdir()) == []
    assert find_cached("srv", 5, tmp_path / "cache") is None


def test_find_cached_requires_matching_marker(tmp_path):
    root = tmp_path / "cache"
    entry = build_dir("srv", 7, root) / ("cd" * 8)
    entry.mkdir(parents=True)
    assert find_cached("srv", 7, root) is None  # no marker: an interrupted install
    (entry / MARKER).write_text(json.dumps({"digest": "ff" * 32}))
    assert find_cached("srv", 7, root) is None  # marker of another archive
    (entry / MARKER).write_text(json.dumps({"digest": "cd" * 32}))
    assert find_cached("srv", 7, root) == entry
    assert find_cached("srv", 8, root) is None


def test_activated_environ(tmp_path):
    env = activated_environ(tmp_path / "p", {"PATH": "/old/env/bin:/usr/bin", "CONDA_PREFIX": "/old/env",
                                             "PYTHONHOME": "/x", "HOME": "/h"}, name="alice/ml")
    assert env["PATH"] == f"{tmp_path / 'p' / 'bin'}:/usr/bin"
    assert env["CONDA_PREFIX"] == str(tmp_path / "p") and env["CONDA_DEFAULT_ENV"] == "alice/ml"
    assert "PYTHONHOME" not in env and env["HOME"] == "/h"


# ------------------------------------------------------------------------------ a stub API


class StubAPI:
    """Just enough of the v1 API for ``run``: environment ``alice/ml``, its builds, archives.

    ``reset`` replaces build ``id`` by another build with the same id (a server whose database
    was reset). ``requests`` records every path asked for, to count what a cached run costs.
    """

    def __init__(self) -> None:
        self.builds: dict[int, dict] = {}
        self.archives: dict[int, bytes] = {}
        self.current: int | None = None
        self.requests: list[str] = []

    def reset(self, build_id: int, scheduled_on: str, archive: bytes = b"", sha256: str = "ab" * 32) -> dict:
        self.builds[build_id] = {
            "id": build_id, "environment_id": 7, "status": "COMPLETED", "scheduled_on": scheduled_on,
            "specification": {"id": 1, "name": "ml", "sha256": sha256},
            "build_artifacts": [{"id": 1, "artifact_type": "CONDA_PACK", "key": "k"}],
        }
        self.archives[build_id] = archive
        self.current = build_id
        return self.builds[build_id]

    def answer(self, path: str) -> tuple[int, bytes]:
        self.requests.append(path)
        if path == "/api/v1/environment/alice/ml/":
            current = self.builds.get(self.current) if self.current is not None else None
            listed = {**current, "specification": None, "build_artifacts": None} if current else None
            data = {"id": 7, "name": "ml", "namespace": {"id": 1, "name": "alice"},
                    "current_build_id": self.current, "current_build": listed}
            return 200, json.dumps({"status": "ok", "data": data}).encode()
        if m := re.fullmatch(r"/api/v1/build/(\d+)/", path):
            if int(m[1]) in self.builds:
                return 200, json.dumps({"status": "ok", "data": self.builds[int(m[1])]}).encode()
        if m := re.fullmatch(r"/api/v1/build/(\d+)/archive/", path):
            if int(m[1]) in self.archives:
                return 200, self.archives[int(m[1])]
        return 404, b'{"status":"error","message":"not found"}'

    @contextmanager
    def serve(self) -> Iterator[str]:
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                status, body = api.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def _fake_env_archive(path: Path, label: str) -> bytes:
    """A tiny "environment" whose ``bin/python`` is a shell script that says which build it is."""
    script = f'#!/bin/sh\necho "{label} $*"\n'.encode()
    info = tarfile.TarInfo("bin/python")
    info.mode, info.size = 0o755, len(script)
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(info, io.BytesIO(script))
    return path.read_bytes()


def test_identity_matching_rules():
    stored = build_identity({"id": 4, "environment_id": 7, "scheduled_on": "2024-05-01T10:00:00.123456",
                             "specification": {"sha256": "ab" * 32}}, "ml")
    listed = build_identity({"id": 4, "environment_id": 7, "scheduled_on": "2024-05-01T10:00:00.123456",
                             "specification": None})
    assert identity_matches(stored, listed) and identity_matches(stored, {**listed, "environment": "ml"})
    assert not identity_matches(stored, {**listed, "scheduled_on": "2024-06-01T00:00:00"})  # after a reset
    assert not identity_matches(stored, {**listed, "sha256": "cd" * 32})
    assert not identity_matches(None, listed)  # a marker from before identities: re-download
    assert not identity_matches({"build_id": 4}, listed)


def test_build_key_is_upstreams():
    import datetime as dt

    from conda_store_jupyter.naming import build_key as server_build_key

    when = dt.datetime(2024, 5, 1, 10, 0, 0, 123456)
    ident = build_identity({"id": 4, "scheduled_on": when.isoformat(), "specification": {"sha256": "ab" * 32}}, "ml")
    assert build_key(ident) == server_build_key("ab" * 32, when, 4, "ml")
    assert build_key({k: v for k, v in ident.items() if k != "environment"}) is None


def test_find_cached_checks_the_identity(tmp_path):
    root = tmp_path / "cache"
    entry = build_dir("srv", 7, root) / ("cd" * 8)
    entry.mkdir(parents=True)
    ident = {"build_id": 7, "scheduled_on": "2024-05-01T10:00:00"}
    (entry / MARKER).write_text(json.dumps({"digest": "cd" * 32, "build_id": 7}))
    assert find_cached("srv", 7, root, identity=ident) is None  # no identity recorded
    (entry / MARKER).write_text(json.dumps({"digest": "cd" * 32, "build_id": 7, "identity": ident}))
    assert find_cached("srv", 7, root, identity=ident) == entry
    assert find_cached("srv", 7, root, identity={**ident, "scheduled_on": "2025-01-01T00:00:00"}) is None


def test_run_after_a_server_reset_does_not_execute_the_old_build(tmp_path):
    """Build ids repeat after a server reset; the cache used to run the old build 42 silently."""
    api = StubAPI()
    xdg = tmp_path / "xdg"
    first = _fake_env_archive(tmp_path / "first.tar.gz", "first-build")
    second = _fake_env_archive(tmp_path / "second.tar.gz", "second-build")
    with api.serve() as url:
        def run(uri: str) -> str:
            proc = subprocess.run([CONDA_STORE, "--conda-store-url", url, "run", uri, "--", "python", "hi"],
                                  capture_output=True, text=True, env=cli_env(xdg), timeout=60)
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

        api.reset(42, "2024-05-01T10:00:00.000001", first)
        assert run("42") == "first-build hi\n"
        api.requests.clear()
        assert run("42") == "first-build hi\n"
        assert api.requests == ["/api/v1/build/42/"]  # cached: one light request, no download

        api.reset(42, "2024-06-02T11:00:00.000002", second, sha256="ef" * 32)  # the server was reset
        assert run("42") == "second-build hi\n"
        api.requests.clear()
        assert run("alice/ml") == "second-build hi\n"
        assert api.requests == ["/api/v1/environment/alice/ml/"]  # ns/env: still one request

        api.reset(42, "2024-07-03T12:00:00.000003", first)  # same archive bytes as the first time
        assert run("alice/ml") == "first-build hi\n"
        assert "/api/v1/build/42/archive/" in api.requests
        api.requests.clear()
        assert run("alice/ml") == "first-build hi\n" and api.requests == ["/api/v1/environment/alice/ml/"]
    markers = [json.loads(p.read_text()) for p in xdg.rglob(MARKER)]
    assert sorted(m["identity"]["scheduled_on"] for m in markers) == ["2024-06-02T11:00:00.000002", "2024-07-03T12:00:00.000003"]
    import datetime as dt

    from conda_store_jupyter.naming import build_key as server_build_key

    latest = max(markers, key=lambda m: m["identity"]["scheduled_on"])
    assert latest["build_key"] == server_build_key("ab" * 32, dt.datetime(2024, 7, 3, 12, 0, 0, 3), 42, "ml")


# ------------------------------------------------------------------------------ a real archive

SPEC = """\
name: clirun
dependencies:
  - python 3.11.*
  - hello
"""


@pytest.fixture(scope="module")
def packed(tmp_path_factory, local_channel, package_cache_dir) -> Path:
    """A real conda-pack archive of a real environment (python + native hello with placeholders)."""
    from conda_store_jupyter.builder import (
        BuildLog,
        BuildPaths,
        BuildSettings,
        run_pipeline,
    )
    from conda_store_jupyter.builder.records import current_platform
    from conda_store_jupyter.schema import parse_specification

    if current_platform() != "linux-64":
        pytest.skip("the local test channel has linux-64 builds")
    out = tmp_path_factory.mktemp("clibuild")
    settings = BuildSettings(
        channels=(local_channel.url,), platforms=(current_platform(),),
        package_cache_directory=package_cache_dir, pip_index_url=local_channel.pypi_index_url, timeout=300,
    )
    paths = BuildPaths.in_directory(out)
    with BuildLog(paths.log) as log:
        result = run_pipeline(parse_specification(SPEC), settings, paths, log)
    return Path(result.archive)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[StubAPI, str]]:
    """A stub server that knows build 42 (and ``alice/ml`` whose current build it is)."""
    stub = StubAPI()
    stub.reset(42, "2024-05-01T10:00:00.000042")
    with stub.serve() as url:
        yield stub, url


@pytest.fixture(scope="module")
def cache(tmp_path_factory, packed, api) -> Path:
    """A cache dir where build 42 of the stub server is installed from the archive."""
    from conda_store_jupyter.cli._config import resolve_config

    stub, url = api
    root = tmp_path_factory.mktemp("xdg")
    key = resolve_config(url=url, environ={}).cache_key
    directory = build_dir(key, 42, root / "conda-store")
    directory.mkdir(parents=True)
    install_archive(packed, _sha256(packed), 42, directory, build_identity(stub.builds[42], "ml"))
    return root


def test_real_archive_installs_relocated(cache, packed):
    [prefix] = [p for p in (cache / "conda-store").glob("*/42/*") if p.is_dir()]
    assert prefix.name == _sha256(packed)[:16]
    assert json.loads((prefix / MARKER).read_text())["digest"] == _sha256(packed)
    # conda-unpack rewrote the native package's placeholder to the cache location
    out = subprocess.run([prefix / "bin" / "hello"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("hello")
    assert str(prefix) in (prefix / "bin" / "hello").read_text()
    py = subprocess.run([prefix / "bin" / "python", "-c", "import sys; print(sys.prefix)"],
                        capture_output=True, text=True, check=True).stdout.strip()
    assert Path(py) == prefix


def test_cached_run_makes_one_light_request_and_propagates_exit_code(cache, api):
    # Numeric build id + cached build: one request for the build's identity, no download.
    stub, url = api
    stub.requests.clear()
    cmd = [CONDA_STORE, "--conda-store-url", url, "run", "42", "--",
           "python", "-c", "import os, sys; print(42, os.environ['CONDA_PREFIX'] == sys.prefix); sys.exit(3)"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(cache), timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "42 True\n" and proc.stderr == ""
    assert stub.requests == ["/api/v1/build/42/"]


def test_cached_run_passes_stdin_and_runs_env_commands(cache, api):
    url = api[1]
    cmd = [CONDA_STORE, "--conda-store-url", url, "run", "42", "python", "-c",
           "import sys; print(sys.stdin.read().upper())"]
    proc = subprocess.run(cmd, input="piped", capture_output=True, text=True, env=cli_env(cache), timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "PIPED\n")
    hello = subprocess.run([CONDA_STORE, "--conda-store-url", url, "run", "42", "hello"],
                           capture_output=True, text=True, env=cli_env(cache), timeout=60)
    assert hello.returncode == 0 and hello.stdout.startswith("hello")
    missing = subprocess.run([CONDA_STORE, "--conda-store-url", url, "run", "42", "no-such-tool"],
                             capture_output=True, text=True, env=cli_env(cache), timeout=60)
    assert missing.returncode == 127 and missing.stderr.count("\n") == 1 and "not found" in missing.stderr


def test_cached_run_does_not_import_heavy_modules(cache, api):
    url = api[1]
    probe = textwrap.dedent(f"""
        import os, sys
        def fake_execve(path, argv, env):
            heavy = sorted(m for m in ("click", "httpx", "rich", "yaml", "pydantic", "sqlalchemy") if m in sys.modules)
            print(",".join(heavy) or "none", os.path.basename(path), argv[1:])
            os._exit(0)
        os.execve = fake_execve
        from conda_store_jupyter.cli import main
        main(["--conda-store-url", "{url}", "run", "42", "--", "python", "-V"])
    """)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=cli_env(cache), timeout=60)
    assert proc.stdout == "none python ['-V']\n", proc.stderr


def test_shebang_script_runs_in_cached_env(cache, api, tmp_path):
    url = api[1]
    script = tmp_path / "tool"
    script.write_text(
        f"#!{CONDA_STORE}\n"
        "#! conda-store run --artifact archive 42\n"
        "#! conda-store run -- python\n"
        "import os, sys\n"
        "print(os.environ['CONDA_PREFIX'] == sys.prefix, sys.argv[1:])\n"
        "sys.exit(int(sys.argv[-1]))\n"
    )
    script.chmod(0o755)
    env = {**cli_env(cache), "CONDA_STORE_URL": url}
    proc = subprocess.run([script, "a b", "5"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 5, proc.stderr
    assert proc.stdout == "True ['a b', '5']\n"


def test_activation_hook_paths_are_arguments_not_shell_code(tmp_path):
    """A cache path with quotes or $(...) was pasted into the ``sh -c`` script and executed."""
    prefix = tmp_path / 'we"ird $(touch INJECTED) `touch TICKED`' / "prefix"
    hooks = prefix / "etc" / "conda" / "activate.d"
    hooks.mkdir(parents=True)
    (prefix / "bin").mkdir()
    (hooks / "a.sh").write_text('export HOOK_A=first\n')
    (hooks / "b $(touch B).sh").write_text('export HOOK_B="$HOOK_A-second"\n')
    probe = textwrap.dedent(f"""
        from pathlib import Path
        from conda_store_jupyter.cli._run import exec_in_env
        exec_in_env(Path({str(prefix)!r}), ["sh", "-c", 'echo "$HOOK_B" "$@"', "sh", "x y", "$(z)"])
    """)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "first-second x y $(z)\n"), proc.stderr
    assert not [p.name for p in tmp_path.rglob("*") if p.name in ("INJECTED", "TICKED", "B")]


def test_a_failing_activation_hook_stops_the_run(tmp_path):
    prefix = tmp_path / "prefix"
    (prefix / "etc" / "conda" / "activate.d").mkdir(parents=True)
    (prefix / "etc" / "conda" / "activate.d" / "a.sh").write_text("false\n")
    probe = ("from pathlib import Path; from conda_store_jupyter.cli._run import exec_in_env; "
             f"exec_in_env(Path({str(prefix)!r}), ['echo', 'ran'])")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""

"""``conda-store run`` without a server: safe extraction, the cache, activation and exec.

Hostile archives are made by hand with ``tarfile``; the good archive is a real conda-pack of a
real environment built by the pipeline from the local test channel.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from conda_store_jupyter.cli._errors import CLIError
from conda_store_jupyter.cli._extract import safe_extract
from conda_store_jupyter.cli._run import (
    MARKER,
    activated_environ,
    build_dir,
    find_cached,
    install_archive,
)

CONDA_STORE = Path(sys.executable).parent / "conda-store"

# ------------------------------------------------------------------------------ hostile archives


def _tar(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"evil\n", compress: bool = True) -> Path:
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for info in members:
            if info.isfile():
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return path


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
    from conda_store_jupyter.build import BuildLog, BuildPaths, BuildSettings, run_pipeline
    from conda_store_jupyter.build.records import current_platform
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
def cache(tmp_path_factory, packed) -> Path:
    """A cache dir where build 42 of server 'http://127.0.0.1:9' is installed from the archive."""
    from conda_store_jupyter.cli._config import resolve_config

    root = tmp_path_factory.mktemp("xdg")
    key = resolve_config(url="http://127.0.0.1:9", environ={}).cache_key
    directory = build_dir(key, 42, root / "conda-store")
    directory.mkdir(parents=True)
    install_archive(packed, _sha256(packed), 42, directory)
    return root


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA_STORE", "JUPYTERHUB", "CONDA_PREFIX"))}
    env["XDG_CACHE_HOME"] = str(cache)
    return env


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


def test_cached_run_needs_no_server_and_propagates_exit_code(cache):
    # Numeric build id + cached build: no request at all (the URL points at a closed port).
    cmd = [CONDA_STORE, "--conda-store-url", "http://127.0.0.1:9", "run", "42", "--",
           "python", "-c", "import os, sys; print(42, os.environ['CONDA_PREFIX'] == sys.prefix); sys.exit(3)"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(cache), timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "42 True\n" and proc.stderr == ""


def test_cached_run_passes_stdin_and_runs_env_commands(cache):
    cmd = [CONDA_STORE, "--conda-store-url", "http://127.0.0.1:9", "run", "42", "python", "-c",
           "import sys; print(sys.stdin.read().upper())"]
    proc = subprocess.run(cmd, input="piped", capture_output=True, text=True, env=_env(cache), timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "PIPED\n")
    hello = subprocess.run([CONDA_STORE, "--conda-store-url", "http://127.0.0.1:9", "run", "42", "hello"],
                           capture_output=True, text=True, env=_env(cache), timeout=60)
    assert hello.returncode == 0 and hello.stdout.startswith("hello")
    missing = subprocess.run([CONDA_STORE, "--conda-store-url", "http://127.0.0.1:9", "run", "42", "no-such-tool"],
                             capture_output=True, text=True, env=_env(cache), timeout=60)
    assert missing.returncode == 127 and missing.stderr.count("\n") == 1 and "not found" in missing.stderr


def test_cached_run_does_not_import_heavy_modules(cache):
    probe = textwrap.dedent("""
        import os, sys
        def fake_execve(path, argv, env):
            heavy = sorted(m for m in ("click", "httpx", "rich", "yaml", "pydantic", "sqlalchemy") if m in sys.modules)
            print(",".join(heavy) or "none", os.path.basename(path), argv[1:])
            os._exit(0)
        os.execve = fake_execve
        from conda_store_jupyter.cli import main
        main(["--conda-store-url", "http://127.0.0.1:9", "run", "42", "--", "python", "-V"])
    """)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_env(cache), timeout=60)
    assert proc.stdout == "none python ['-V']\n", proc.stderr


def test_shebang_script_runs_in_cached_env(cache, tmp_path):
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
    env = {**_env(cache), "CONDA_STORE_URL": "http://127.0.0.1:9"}
    proc = subprocess.run([script, "a b", "5"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 5, proc.stderr
    assert proc.stdout == "True ['a b', '5']\n"

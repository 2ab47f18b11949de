"""``conda-store-server --processes N``: several real server processes on one port.

Which process answered a request is found the way an operator would: the connection's server
side socket (``/proc/net/tcp``) and the process holding it (``/proc/<pid>/fd``) — the server has
no debug header for it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conda_store_jupyter.app import CondaStore
from conda_store_jupyter.server.app import CondaStoreServer
from conda_store_jupyter.testing.config import write_config
from conda_store_jupyter.worker import logs as live

from .fixtures_service import _DB_NUMBERS
from .processes import descendants, wait_for

ADMIN = "multiprocess-admin-token-0123"
PROCESSES = 2


@dataclass
class Server:
    proc: subprocess.Popen
    url: str  # with the trailing slash
    log: Path
    config: Path

    @property
    def port(self) -> int:
        return urlsplit(self.url).port

    def supervisor(self) -> int:
        # A fork of the main process: same command line (standalone's redis/workers have others).
        children = [pid for pid in descendants(self.proc.pid)
                    if _ppid(pid) == self.proc.pid and _command(pid) == _command(self.proc.pid)]
        assert len(children) == 1, f"expected one supervisor under the main process, found {children}"
        return children[0]

    def servers(self) -> list[int]:
        supervisor = self.supervisor()
        return sorted(pid for pid in descendants(supervisor) if _ppid(pid) == supervisor and not _zombie(pid))

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _ppid(pid: int) -> int:
    try:
        return int(_stat(pid)[1])
    except OSError:
        return 0


def _zombie(pid: int) -> bool:
    try:
        return _stat(pid)[0] == "Z"
    except OSError:
        return True


def serving_pid(conn: http.client.HTTPConnection, candidates: list[int]) -> int:
    """The pid among ``candidates`` holding the server end of ``conn`` (after a request on it)."""
    client_port, server_port = conn.sock.getsockname()[1], conn.sock.getpeername()[1]
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
            if local == server_port and remote == client_port:
                inode = fields[9]
    assert inode, "the connection's server side is not in /proc/net/tcp"
    for pid in candidates:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no server process holds socket {inode}")


def request(conn: http.client.HTTPConnection, method: str, path: str, token: str = ADMIN,
            body: dict | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def connections_on_every_process(server: Server, token: str = ADMIN) -> dict[int, http.client.HTTPConnection]:
    """One kept-alive connection per server process (new connections until each has one)."""
    pids = server.servers()
    found: dict[int, http.client.HTTPConnection] = {}

    def more() -> bool:
        conn = server.connect()
        assert request(conn, "GET", "/api/v1/", token)[0] == 200
        pid = serving_pid(conn, pids)
        if pid in found:
            conn.close()
        else:
            found[pid] = conn
        return len(found) == len(pids)

    wait_for(more, 30, f"connections reaching all {len(pids)} server processes", 0)
    return found


def start_server(directory: Path, redis_url: str, processes: int = PROCESSES) -> Server:
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(
        directory / "conda_store_config.py",
        {"store_directory": str(directory / "store"), "redis_url": redis_url},
        AuthenticationBackend={"predefined_tokens": {
            ADMIN: {"primary_namespace": "admin", "role_bindings": {"*/*": ["admin"]}}}},
    )
    log = directory / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conda_store_jupyter.server.app", "--config", str(config), "--port", "0",
             "--processes", str(processes)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    match = wait_for(lambda: re.search(r"listening on (\S+)", log.read_text()), 60, "the listening line",
                     proc=proc, log=log)
    server = Server(proc=proc, url=match.group(1), log=log, config=config)
    wait_for(lambda: len(server.servers()) == processes, 30, f"{processes} server processes", proc=proc, log=log)
    return server


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


@pytest.fixture(scope="module")
def server(redis_server_url, tmp_path_factory):
    import redis

    url = f"{redis_server_url}/{next(_DB_NUMBERS)}"
    redis.Redis.from_url(url).flushdb()
    running = start_server(tmp_path_factory.mktemp("multiprocess"), url)
    yield running
    stop_server(running)


def test_processes_default_to_the_cores_and_must_be_positive(tmp_path):
    assert CondaStoreServer().processes == len(os.sched_getaffinity(0))
    result = subprocess.run([sys.executable, "-m", "conda_store_jupyter.server.app", "--port", "0", "--processes", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == "conda-store-server: CondaStoreServer.processes must be at least 1, got 0"


def test_a_token_revoked_through_one_process_is_refused_by_all_at_once(server):
    conns = connections_on_every_process(server)
    first = next(iter(conns.values()))
    status, body = request(first, "POST", "/api/v1/token/", body={"note": "multiprocess"})
    assert status == 200, body
    token = body["data"]["token"]
    for pid, conn in conns.items():  # accepted everywhere (and so remembered, were anything cached)
        assert request(conn, "GET", "/api/v1/permission/", token)[0] == 200, pid
    status, body = request(first, "DELETE", "/api/v1/token/", token)  # the token revokes itself
    assert status == 200, body
    for pid, conn in conns.items():  # no waiting: the very next request anywhere is refused
        status, body = request(conn, "GET", "/api/v1/permission/", token)
        assert status == 401, (pid, body)
    for conn in conns.values():
        conn.close()


def test_live_log_follows_through_every_process(server):
    store = CondaStore.from_config_file(server.config)
    from conda_store_jupyter import api

    spec = api.prepare_specification(store, "name: followed\ndependencies:\n  - python\n")
    build_id = api.submit(store, namespace="admin", specification=spec)  # no worker: stays queued
    conns = connections_on_every_process(server)
    path = f"/api/v1/build/{build_id}/logs/stream/"
    live.publish_line(store, build_id, "first line")
    responses = {}
    for pid, conn in conns.items():
        conn.request("GET", path, headers={"Authorization": f"Bearer {ADMIN}"})
        responses[pid] = conn.getresponse()
        assert responses[pid].status == 200
        assert responses[pid].getheader("Content-Type").startswith("text/event-stream")

    def read_until(response, marker: str) -> str:
        text = ""
        while marker not in text:
            line = response.readline().decode()
            assert line, f"the stream ended before {marker!r}: {text!r}"
            text += line
        return text

    for response in responses.values():
        assert "data: first line" in read_until(response, "data: first line")
    live.publish_line(store, build_id, "second line")  # after every process is following
    live.finish_log(store, build_id, "COMPLETED")
    for pid, response in responses.items():
        text = read_until(response, "event: end")
        assert "data: second line" in text, (pid, text)
    for conn in conns.values():
        conn.close()
    store.dispose()


def test_a_killed_server_process_is_replaced_and_the_port_keeps_answering(server):
    before = server.servers()
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    for _ in range(20):  # at once, and while it is being replaced: another process answers
        conn = server.connect()
        assert request(conn, "GET", "/api/v1/")[0] == 200
        conn.close()
    after = wait_for(lambda: (lambda now: now if len(now) == PROCESSES and victim not in now else None)(
        server.servers()), 30, "a replacement server process", proc=server.proc, log=server.log)
    assert set(before) - {victim} <= set(after)
    assert "server process %d exited (signal SIGKILL)" % victim in server.log.read_text()
    connections_on_every_process(server)  # the replacement answers too


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopping_the_server_leaves_no_process_behind(tmp_path, redis_url, how):
    server = start_server(tmp_path, redis_url)
    try:
        pids = [server.supervisor(), *server.servers()]
        connections_on_every_process(server)
        server.proc.send_signal(getattr(signal, how))
        code = server.proc.wait(30)
        assert code == (0 if how == "SIGTERM" else -signal.SIGKILL)
        # SIGKILL: the kernel tells the orphans (parent-death signal); they must go by themselves.
        wait_for(lambda: all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in pids), 30,
                 f"{pids} to exit", log=server.log)
    finally:
        stop_server(server)
        try:
            os.killpg(server.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_standalone_starts_its_services_once_and_stops_everything(tmp_path, local_channel, package_cache_dir):
    """``--standalone --processes 2 --workers 1``: one redis-server and one worker, children of
    the main process (not of the server processes), a working admin token; SIGTERM stops all."""
    from .standalone_server import standalone_server, write_standalone_config

    config = f"--config={write_standalone_config(tmp_path, local_channel, package_cache_dir)}"
    with standalone_server(tmp_path, config, "--processes=2", "--workers=1") as running:
        main = running.proc.pid
        match = running.wait_output(r"admin token \(shown once; also in (\S+),")
        token = Path(match.group(1)).read_text().strip()
        server = Server(proc=running.proc, url=running.url + "/", log=running.log, config=Path())
        wait_for(lambda: len(server.servers()) == 2, 30, "2 server processes", proc=running.proc, log=running.log)
        tree = descendants(main)
        redis = [pid for pid in tree if "redis-server" in _command(pid)]
        workers = [pid for pid in tree if "conda_store_jupyter.worker" in _command(pid)]
        assert len(redis) == 1 and len(workers) == 1, [(pid, _command(pid)) for pid in tree]
        forks = {server.supervisor(), *server.servers()}
        for pid in redis + workers:  # started by the main process (maybe through a wrapper), not a fork
            assert not {pid, _ppid(pid)} & forks, (pid, _command(pid))
        for pid, conn in connections_on_every_process(server, token).items():
            status, body = request(conn, "GET", "/api/v1/permission/", token)
            assert status == 200 and body["data"]["authenticated"], (pid, body)
            conn.close()
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(60) == 0
        wait_for(lambda: not [pid for pid in tree if Path(f"/proc/{pid}").exists() and not _zombie(pid)], 30,
                 "every process of the standalone server to exit", log=running.log)


def test_a_config_that_starts_a_thread_is_refused_before_forking(tmp_path, redis_url):
    """Forking a process with threads copies half-held locks: refused, one line, nothing started."""
    config = write_config(tmp_path / "conda_store_config.py",
                          {"store_directory": str(tmp_path / "store"), "redis_url": redis_url})
    config.write_text(config.read_text() + "import threading, time\n"
                      "threading.Thread(target=time.sleep, args=(60,), daemon=True, name='from-config').start()\n")
    result = subprocess.run([sys.executable, "-m", "conda_store_jupyter.server.app", "--config", str(config),
                             "--port", "0", "--processes", "2"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines()[-1].startswith(
        "conda-store-server: cannot fork the server processes safely: threads are running ("), result.stderr
    assert "from-config" in result.stderr and "CondaStoreServer.processes = 1" in result.stderr
    assert "Traceback" not in result.stderr

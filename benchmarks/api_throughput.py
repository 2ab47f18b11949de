"""Throughput of ``GET /api/v1/environment/`` over 2,000 environments (SQLite).

Rows are inserted directly (this measures the API, not builds). Reports requests/s and p50/p99
latency for a full page (``size=100``), a filtered search, and the unpaged listing the upstream
client makes (all 2,000 rows in one response), with a few concurrent clients.

    .venv/bin/python benchmarks/api_throughput.py [--environments 2000] [--requests 400] [--concurrency 4]

``--processes N`` instead runs a real ``conda-store-server --processes N`` next to a
``--processes 1`` one on the same store and drives both with a load generator that is not the
bottleneck (``wrk`` when installed — Debian: ``apt-get install wrk`` — else several client
processes), at concurrency 1, 4 and 32 for the 100-row page; the figures are printed side by side.

    .venv/bin/python benchmarks/api_throughput.py --processes 2 [--seconds 5]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from traitlets.config import Config

from conda_store_jupyter import orm
from conda_store_jupyter.schema import BuildStatus
from conda_store_jupyter.server.testing import bearer, running_server

TOKEN = "benchmark-admin-token-0123456789"


def populate(store, n: int) -> None:
    """``n`` environments over ``n // 50`` namespaces, each with one COMPLETED current build."""
    with store.session() as db:
        spec = orm.Specification(name="env", spec={"name": "env", "dependencies": ["python"]}, sha256="0" * 64)
        db.add(spec)
        namespaces = [orm.Namespace(name=f"team-{i}", metadata_={}) for i in range(max(1, n // 50))]
        db.add_all(namespaces)
        db.flush()
        envs = [orm.Environment(namespace_id=namespaces[i % len(namespaces)].id, name=f"env-{i}") for i in range(n)]
        db.add_all(envs)
        db.flush()
        builds = [orm.Build(specification_id=spec.id, environment_id=e.id, status=BuildStatus.COMPLETED) for e in envs]
        db.add_all(builds)
        db.flush()
        for env, build in zip(envs, builds):
            env.current_build_id = build.id


def measure(url: str, params: dict, requests: int, concurrency: int) -> dict[str, float]:
    def one(client: httpx.Client) -> float:
        start = time.perf_counter()
        r = client.get(url, params=params)
        r.raise_for_status()
        return time.perf_counter() - start

    clients = [httpx.Client(headers=bearer(TOKEN), timeout=60) for _ in range(concurrency)]
    for c in clients:
        one(c)  # warm up connections and caches
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(lambda i: one(clients[i % concurrency]), range(requests)))
    wall = time.perf_counter() - start
    for c in clients:
        c.close()
    return {
        "rps": requests / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }



# -- real server processes (--processes) ------------------------------------------------------------
def start_server(config: str, processes: int) -> tuple[subprocess.Popen, str]:
    """``conda-store-server --config CONFIG --port 0 --processes N`` and its URL (once it answers)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "conda_store_jupyter.server.app", "--config", config, "--port", "0",
         "--processes", str(processes), "--log-level", "ERROR"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = re.search(r"listening on (\S+)", proc.stdout.readline())
        if m:
            url = m.group(1)
            break
        if proc.poll() is not None:
            raise SystemExit(f"conda-store-server --processes {processes} exited with {proc.returncode}")
    else:
        raise SystemExit("conda-store-server did not start")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
    while time.monotonic() < deadline:  # every process forked and answering
        try:
            if httpx.get(url + "api/v1/", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


_WRK_LATENCY = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*")


def wrk(url: str, concurrency: int, seconds: float) -> dict[str, float]:
    """``wrk`` (C, epoll): far cheaper per request than the server, so it measures the server."""
    threads = min(concurrency, 2)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "--timeout", "60s",
                          "-H", f"Authorization: Bearer {TOKEN}", url],
                         capture_output=True, text=True, check=True).stdout
    errors = _WRK_ERRORS.search(out)
    if errors:
        raise SystemExit(f"wrk saw errors:\n{out}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    latency = {q: float(v) * scale[u] for q, v, u in _WRK_LATENCY.findall(out)}
    return {"rps": float(_WRK_RPS.search(out).group(1)), "p50_ms": latency["50"], "p99_ms": latency["99"]}


def _client_process(url: str, connections: int, seconds: float, queue) -> None:
    """One load-generator process: ``connections`` keep-alive connections, one thread each."""
    parts = urlsplit(url)
    path = parts.path + ("?" + parts.query if parts.query else "")
    latencies: list[float] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def run() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        mine = []
        while time.monotonic() < end:
            start = time.perf_counter()
            conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"HTTP {response.status}")
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put(latencies)


def python_clients(url: str, concurrency: int, seconds: float) -> dict[str, float]:
    """Fallback load generator: several processes (one GIL each) of keep-alive connections."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = min(concurrency, 4)
    shares = [concurrency // workers + (i < concurrency % workers) for i in range(workers)]
    procs = [ctx.Process(target=_client_process, args=(url, n, seconds, queue)) for n in shares]
    for p in procs:
        p.start()
    latencies = sorted(x for _ in procs for x in queue.get())
    for p in procs:
        p.join()
    return {"rps": len(latencies) / seconds, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}


def server_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time (user + system) of ``pid`` and of every live descendant, per pid: the servers' own
    cost, which the neighbours of a shared machine do not change (unlike req/s)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    tree, todo = {pid}, [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                todo.append(child)
    return {p: times.get(p, 0.0) for p in tree}


def compare_processes(args) -> None:
    """``--processes 1`` and ``--processes N`` on the same store, driven by the same load generator."""
    load = wrk if shutil.which("wrk") else python_clients
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "conda_store_config.py")
        config.write_text(
            "c = get_config()  # noqa: F821\n"
            f"c.CondaStore.store_directory = {tmp!r}\n"
            f"c.AuthenticationBackend.predefined_tokens = {{{TOKEN!r}: {{'primary_namespace': 'team-0', "
            "'role_bindings': {'*/*': ['admin']}}}\n")
        from conda_store_jupyter.app import CondaStore

        store = CondaStore.from_config_file(config)
        populate(store, args.environments)
        store.dispose()
        counts = [1, args.processes]
        results: dict[int, dict[int, dict[str, float]]] = {}
        for count in counts:
            proc, url = start_server(str(config), count)
            try:
                page = url + "api/v1/environment/?size=100"
                load(page, 4, 1.0)  # warm-up: connections, caches, the SQLite page cache
                results[count] = {}
                for c in (1, 4, 32):
                    before = server_cpu_seconds(proc.pid)
                    m = results[count][c] = load(page, c, args.seconds)
                    after = server_cpu_seconds(proc.pid)
                    used = sorted((after[p] - before.get(p, 0.0) for p in after), reverse=True)
                    m["cpu_ms"] = 1000 * sum(used) / (m["rps"] * args.seconds)
                    # how evenly the kernel spread the work: the busiest processes' shares
                    m["split"] = "/".join(f"{100 * u / max(sum(used), 1e-9):.0f}" for u in used[:count])
            finally:
                stop_server(proc)
    print(f"GET /api/v1/environment/?size=100 over {args.environments} environments (SQLite), "
          f"{args.seconds:g} s per figure, load generator: {'wrk' if load is wrk else 'Python client processes'}, "
          f"{len(os.sched_getaffinity(0))} cores")
    n = args.processes
    print(f"  {'clients':>7} | {'1 process':^62} | {f'{n} processes':^62} | speed-up")
    for c in (1, 4, 32):
        one, many = results[1][c], results[n][c]
        cell = lambda m: (f"{m['rps']:7.1f} req/s p50 {m['p50_ms']:6.1f} p99 {m['p99_ms']:6.1f} ms "  # noqa: E731
                          f"cpu {m['cpu_ms']:5.1f} ms/req")
        split = f" (CPU split {many['split']} %)" if n > 1 else ""
        print(f"  {c:>7} | {cell(one)} | {cell(many)} | {many['rps'] / one['rps']:5.2f}x{split}")
    worst = results[n][32]
    print(f"target at 32 clients with {n} processes: >= 200 req/s ({worst['rps']:.0f}: "
          f"{'met' if worst['rps'] >= 200 else 'NOT met'}), p99 < 300 ms ({worst['p99_ms']:.0f} ms: "
          f"{'met' if worst['p99_ms'] < 300 else 'NOT met'})")
    cpu = worst["cpu_ms"]
    print(f"server CPU per request at 32 clients: {cpu:.1f} ms, so {n} processes on {n} idle cores could serve "
          f"~{1000 * n / cpu:.0f} req/s; load average now {os.getloadavg()[0]:.1f} on "
          f"{len(os.sched_getaffinity(0))} cores (req/s and latency above are shared with it)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--environments", type=int, default=2000)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--processes", type=int, default=0,
                   help="compare real servers with 1 and with this many processes (wrk if installed)")
    p.add_argument("--seconds", type=float, default=5.0, help="with --processes: duration of each figure")
    args = p.parse_args()
    if args.processes:
        compare_processes(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        c = Config()
        c.CondaStore.store_directory = tmp
        c.CondaStoreServer.log_level = 40
        c.AuthenticationBackend.predefined_tokens = {
            TOKEN: {"primary_namespace": "team-0", "role_bindings": {"*/*": ["admin"]}}}
        with running_server(c) as server:
            server.app.log.setLevel(40)
            populate(server.store, args.environments)
            url = server.api("environment/")
            print(f"GET /api/v1/environment/ over {args.environments} environments, "
                  f"{args.requests} requests, {args.concurrency} concurrent clients (SQLite)")
            cases = [("page of 100", {"size": 100}), ("page 7 of 100, sorted desc", {"size": 100, "page": 7, "order": "desc"}),
                     ("search 'env-19' + status", {"search": "env-19", "status": "COMPLETED", "size": 100}),
                     ("unpaged (all rows)", {})]
            for label, params in cases:
                n = args.requests if params else max(20, args.requests // 10)
                m = measure(url, params, n, args.concurrency)
                print(f"  {label:<30} {m['rps']:8.1f} req/s   p50 {m['p50_ms']:7.1f} ms   p99 {m['p99_ms']:7.1f} ms")


if __name__ == "__main__":
    main()

"""Throughput of ``GET /api/v1/environment/`` over 2,000 environments (SQLite, one server process).

Rows are inserted directly (this measures the API, not builds). Reports requests/s and p50/p99
latency for a full page (``size=100``), a filtered search, and the unpaged listing the upstream
client makes (all 2,000 rows in one response), with a few concurrent clients.

    .venv/bin/python benchmarks/api_throughput.py [--environments 2000] [--requests 400] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--environments", type=int, default=2000)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args()
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

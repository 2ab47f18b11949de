"""What a user waits for: submit -> COMPLETED through the running service vs raw py-rattler.

    .venv/bin/python benchmarks/e2e_build.py [--repeat 7] [--artifacts LOCKFILE,YAML] [--poll 0.01]

Starts ``conda-store-server --standalone --workers 1`` on a fresh store that builds from the local
test channel (built and cached under .cache/ like the test suite), warms the package cache with
one build, then, interleaved so drift hits both sides equally, ``--repeat`` times:

* raw:     ``rattler.solve`` + ``rattler.install`` of the same spec (``python 3.11.*`` + ``six``)
           into a fresh prefix, in this process, with one warm gateway (the cheapest possible);
* service: ``POST /api/v1/specification/`` -> the build is COMPLETED, seen by a client polling
           ``GET /api/v1/build/<id>/`` every ``--poll`` seconds ("observed"); the build's own
           ``ended_on`` (the commit of COMPLETED, same host clock) gives the figure without the
           polling granularity ("committed").

Then how long after COMPLETED every artifact is ready: today the image (``image_status``), or
an ``artifacts`` list with per-artifact states when the API has one (both are read).

Prints the medians, the difference service - raw (target: <= raw + 300 ms) and, per build, the
stage timings of its log, so the gap can be located.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from conda_store_jupyter.testing.config import local_channel_traits, write_config  # noqa: E402
from tests.processes import free_port, stop_process, wait_for  # noqa: E402

SPEC = "name: {name}\ndependencies:\n  - python 3.11.*\n  - six\n"
RAW_SPECS = ["python 3.11.*", "six"]
TOKEN = "e2e-bench-admin-token-0123456789abcdef"
TARGET_MS = 300.0
FINISHED = {"COMPLETED", "FAILED", "CANCELED"}
ARTIFACT_DEADLINE = 120.0

_GATEWAY = None


async def raw_build(channel_url: str, cache: Path, prefix: Path, platform: str) -> None:
    from rattler import Gateway, MatchSpec, install, solve

    global _GATEWAY
    if _GATEWAY is None:
        _GATEWAY = Gateway(cache_dir=cache / "repodata")
    records = await solve(sources=[channel_url], specs=RAW_SPECS, gateway=_GATEWAY,
                          platforms=[platform, "noarch"], virtual_packages=[])
    await install(records, target_prefix=prefix, cache_dir=cache / "pkgs", show_progress=False,
                  requested_specs=[MatchSpec(s)._match_spec for s in RAW_SPECS])


class Service:
    def __init__(self, root: Path, channel, package_cache: Path, artifacts: list[str] | None) -> None:
        traits = {"store_directory": str(root / "store"), **local_channel_traits(channel, package_cache),
                  "conda_solve_platforms": ["linux-64"]}
        if artifacts is not None:
            traits["build_artifacts"] = artifacts
        self.expect_image = artifacts is None or "DOCKER_MANIFEST" in artifacts
        self.config = write_config(root / "conda_store_config.py", traits, AuthenticationBackend={
            "predefined_tokens": {TOKEN: {"primary_namespace": "bench", "role_bindings": {"*/*": ["admin"]},
                                          "username": "bench"}}})
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        self.proc: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "conda-store-server"), "--standalone", f"--config={self.config}",
                 f"--port={self.port}", "--workers=1"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True)
        wait_for(lambda: self.client.get("/api/v1/").status_code == 200, 120, "conda-store-server to answer", 0.2,
                 proc=self.proc, log=self.log, ignore=httpx.HTTPError)

    def stop(self) -> None:
        self.client.close()
        if self.proc is not None:
            stop_process(self.proc, group=True)

    def build(self, build_id: int) -> dict:
        resp = self.client.get(f"/api/v1/build/{build_id}/")
        resp.raise_for_status()
        return resp.json()["data"]

    def submit_and_wait(self, name: str, poll: float) -> dict:
        """Submit; poll until the build ends. Returns the figures of this build (seconds)."""
        wall0, t0 = time.time(), time.perf_counter()
        resp = self.client.post("/api/v1/specification/",
                                json={"namespace": "bench", "specification": SPEC.format(name=name)})
        resp.raise_for_status()
        build_id = int(resp.json()["data"]["build_id"])
        accepted = time.perf_counter() - t0
        while True:
            data = self.build(build_id)
            if data["status"] in FINISHED:
                observed = time.perf_counter() - t0
                break
            time.sleep(poll)
        if data["status"] != "COMPLETED":
            raise RuntimeError(f"build {build_id} is {data['status']}: {data['status_info']}\n{self.logs(build_id)}")
        ended = dt.datetime.fromisoformat(data["ended_on"]).replace(tzinfo=dt.timezone.utc).timestamp()
        started = dt.datetime.fromisoformat(data["started_on"]).replace(tzinfo=dt.timezone.utc).timestamp()
        artifacts_after = self.wait_artifacts(build_id, t0, poll) - observed
        return {"id": build_id, "accepted": accepted, "observed": observed, "committed": ended - wall0,
                "queued": started - wall0, "artifacts_after": artifacts_after}

    def wait_artifacts(self, build_id: int, t0: float, poll: float) -> float:
        """perf_counter offset (from t0) at which no artifact of the build is pending any more."""
        deadline = time.monotonic() + ARTIFACT_DEADLINE
        while time.monotonic() < deadline:
            if not pending_artifacts(self.build(build_id), self.expect_image):
                return time.perf_counter() - t0
            time.sleep(max(poll, 0.02))
        raise RuntimeError(f"build {build_id}: artifacts still pending after {ARTIFACT_DEADLINE:.0f} s: "
                           f"{pending_artifacts(self.build(build_id), self.expect_image)}")

    def logs(self, build_id: int) -> str:
        return self.client.get(f"/api/v1/build/{build_id}/logs/").text


def pending_artifacts(data: dict, expect_image: bool) -> list[str]:
    """Artifacts of a COMPLETED build not ready yet: from an ``artifacts`` list with states (when the
    API has one), else the image's ``image_status``. A failed artifact is not pending."""
    pending: list[str] = []
    listed = data.get("artifacts")
    if isinstance(listed, list):
        for item in listed:
            if isinstance(item, dict):
                state = str(item.get("state") or item.get("status") or "").upper()
                if state in ("PENDING", "QUEUED", "BUILDING", "RUNNING"):
                    pending.append(str(item.get("artifact_type") or item.get("type") or item.get("name")))
    # None until the build's tail has queued the image job (just after COMPLETED is visible).
    if expect_image and data.get("image_status") in (None, "PENDING"):
        pending.append("image")
    return pending


STAGE = re.compile(r"^== (?P<name>[^:]+): (?P<seconds>[0-9.]+) s$")


def stage_timings(log: str, *, before_completed: bool = False) -> dict[str, float]:
    """Stage name -> seconds, from the ``== name: 0.004 s`` lines of a build's log (with
    ``before_completed``: only the stages before ``BUILD COMPLETED``, not the image job's)."""
    out: dict[str, float] = {}
    for line in log.splitlines():
        if before_completed and line.startswith("BUILD COMPLETED"):
            break
        m = STAGE.match(line.strip())
        if m:
            out[m["name"]] = out.get(m["name"], 0.0) + float(m["seconds"])
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.0f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--poll", type=float, default=0.01, help="client poll interval (s)")
    ap.add_argument("--artifacts", default=None,
                    help="comma-separated CondaStore.build_artifacts (default: the store's default)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store (for profiling)")
    args = ap.parse_args()

    from conda_store_jupyter.builder.records import current_platform
    from conda_store_jupyter.testing.channel import build_channel, cache_root

    cache = cache_root()
    channel = build_channel(cache / "channel")
    package_cache = cache / "pkgs"
    package_cache.mkdir(parents=True, exist_ok=True)
    platform = current_platform()
    artifacts = args.artifacts.split(",") if args.artifacts else None
    root = Path(tempfile.mkdtemp(prefix="e2e-bench-"))
    service = Service(root, channel, package_cache, artifacts)
    raw_times: list[float] = []
    runs: list[dict] = []
    try:
        service.start()
        service.submit_and_wait("warmup", args.poll)  # package cache, repodata cache, first-import costs
        asyncio.run(raw_build(channel.url, cache, root / "raw-warmup", platform))
        for i in range(args.repeat):
            prefix = root / f"raw-{i}"
            t0 = time.perf_counter()
            asyncio.run(raw_build(channel.url, cache, prefix, platform))
            raw_times.append(time.perf_counter() - t0)
            shutil.rmtree(prefix, ignore_errors=True)
            runs.append(service.submit_and_wait(f"env-{i}", args.poll))
        print(f"spec: python 3.11.* + six, local channel, warm cache, 1 worker, build_artifacts="
              f"{args.artifacts or 'default'}, client poll {args.poll * 1000:.0f} ms, n={args.repeat}")
        for run in runs:
            log = service.logs(run["id"])
            stages = stage_timings(log)
            run["stages"] = sum(stage_timings(log, before_completed=True).values())
            print(f"  build {run['id']}: accepted {ms(run['accepted'])}  started {ms(run['queued'])}  committed "
                  f"{ms(run['committed'])}  observed {ms(run['observed'])}  artifacts +{ms(run['artifacts_after'])}  "
                  + " ".join(f"{k}={v * 1000:.0f}" for k, v in stages.items()))
        raw = statistics.median(raw_times)
        observed = statistics.median(r["observed"] for r in runs)
        committed = statistics.median(r["committed"] for r in runs)
        after = statistics.median(r["artifacts_after"] for r in runs)
        print(f"raw py-rattler solve+install:        {ms(raw)}")
        print(f"service submit -> COMPLETED observed: {ms(observed)}  (difference {ms(observed - raw)}, "
              f"target <= raw + {TARGET_MS:.0f} ms: {'met' if (observed - raw) * 1000 <= TARGET_MS else 'NOT met'})")
        print(f"service submit -> COMPLETED committed:{ms(committed)}  (difference {ms(committed - raw)})")
        print(f"all artifacts ready after COMPLETED:  {ms(after)}")

        def med(key: str) -> float:
            return statistics.median(r[key] for r in runs)

        # Where the time goes (medians of each phase, so they need not add up exactly).
        print(f"phases: submit accepted {ms(med('accepted'))} | queued -> claimed "
              f"{ms(statistics.median(r['queued'] - r['accepted'] for r in runs))} | logged stages "
              f"{ms(med('stages'))} | rest of the build (fork, DB, live log) "
              f"{ms(statistics.median(r['committed'] - r['queued'] - r['stages'] for r in runs))} | "
              f"commit -> seen by the client {ms(statistics.median(r['observed'] - r['committed'] for r in runs))}")
    finally:
        service.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"store kept in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

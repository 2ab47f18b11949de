"""A small typed client for the conda-store v1 REST API (httpx).

Every failure becomes a :class:`CLIError` with a one-line message: HTTP errors carry the
server's own ``message``; connection problems name the URL. The client knows the v1 envelope
(``{"status", "data", "message", page/size/count}``) and walks pages until ``count`` is reached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from ._config import Config
from ._errors import CLIError, connection_error, http_error, pending_artifact
from ._follow import LogLine, follow
from ._uri import BuildURI

__all__ = ["Client", "CLIError", "ARTIFACT_PATHS", "ARTIFACT_TYPES"]

ARTIFACT_PATHS = {"lockfile": "lockfile/?format=yaml", "yaml": "yaml/", "archive": "archive/", "logs": "logs/"}
"""CLI artifact name → path under ``/api/v1/build/{id}/`` (the lockfile in its YAML form: the
endpoint answers JSON unless asked, for upstream's clients; people read the file we write)."""

ARTIFACT_TYPES = {"lockfile": "LOCKFILE", "yaml": "YAML", "archive": "CONDA_PACK", "logs": "LOGS",
                  "image": "DOCKER_MANIFEST"}
"""CLI artifact name → the ``artifact_type`` that appears in a build's ``build_artifacts``
(``image``: only ``wait`` knows it; images are pulled from the registry, not downloaded)."""

FINAL_STATES = ("COMPLETED", "FAILED", "CANCELED")


@dataclass(frozen=True)
class Download:
    """A finished download: where, how big, and its sha256 (computed while streaming)."""

    path: Path
    size: int
    sha256: str


def _q(name: str) -> str:
    return quote(name, safe="")


class Client:
    """Thin wrapper around one ``httpx.Client``; use as a context manager."""

    def __init__(self, config: Config, timeout: float = 60.0) -> None:
        self.config = config
        self._http = httpx.Client(
            base_url=config.url,
            headers={"Accept": "application/json", "User-Agent": "conda-store-jupyter-cli", **config.auth_headers()},
            verify=config.verify_ssl,
            timeout=timeout,
            follow_redirects=False,
        )
        self._logged_in = False

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    # ------------------------------------------------------------------ plumbing

    def _login(self) -> None:
        """Basic auth = upstream's cookie login: POST {url}/login/ with JSON credentials."""
        if self.config.auth != "basic" or self._logged_in:
            return
        self._logged_in = True
        payload = {"username": self.config.username, "password": self.config.password}
        resp = self._send("POST", "/login/", json=payload)
        if resp.status_code >= 400:
            raise CLIError(f"login as {self.config.username!r} failed (HTTP {resp.status_code}) at {self.config.url}/login/")

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise CLIError(f"timed out talking to conda-store at {self.config.url} ({method} {path}): {exc or 'timeout'}") from None
        except httpx.HTTPError as exc:
            raise connection_error(self.config.url, exc) from None

    def _same_origin_redirect(self, resp: httpx.Response, method: str, path: str) -> httpx.URL:
        """Where a redirect points, if it stays on the server; otherwise a CLIError.

        Every API request carries the user's token (or login cookie) and often a body, so a
        ``Location`` on another scheme, host or port is never followed: an open redirect or a
        misconfigured proxy would hand the credentials to whoever runs that host.
        """
        here = resp.request.url
        location = resp.headers.get("location")
        if not location:
            raise CLIError(f"the server at {self.config.url} answered {method} {path} with HTTP {resp.status_code} but no Location")
        target = here.join(location)
        if (target.scheme, target.host, target.port) != (here.scheme, here.host, here.port):
            origin = f"{target.scheme}://{target.netloc.decode('ascii', 'replace')}"
            raise CLIError(
                f"the server at {self.config.url} redirected {method} {path} to another origin ({origin}); "
                "not following it, to keep your credentials on the server (is --conda-store-url right?)"
            )
        return target

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request, follow same-server redirects (trailing-slash 307s), decode JSON."""
        self._login()
        resp = self._send(method, path, **kwargs)
        for _ in range(5):
            if resp.status_code not in (301, 302, 303, 307, 308):
                break
            target = self._same_origin_redirect(resp, method, path)
            if resp.status_code not in (307, 308):  # 301/302/303 turn into a GET without a body
                method = "GET"
                kwargs = {k: v for k, v in kwargs.items() if k not in ("json", "content", "data", "files")}
            resp = self._send(method, str(target), **kwargs)
        if resp.status_code in (301, 302, 303, 307, 308):
            raise CLIError(f"too many redirects from the server at {self.config.url} ({method} {path})")
        if resp.status_code >= 300:
            raise http_error(resp.status_code, method, str(resp.request.url), resp.content, self.config.credentials)
        try:
            return resp.json()
        except ValueError:
            raise CLIError(
                f"the server at {self.config.url} did not answer with JSON ({method} {path}); is it conda-store?"
            ) from None

    def data(self, method: str, path: str, **kwargs: Any) -> Any:
        doc = self.request(method, path, **kwargs)
        return doc.get("data") if isinstance(doc, dict) and "data" in doc else doc

    def paginate(self, path: str, params: dict[str, Any] | None = None, size: int = 100) -> list[dict[str, Any]]:
        """Every item of a v1 paginated list (pages of ``size`` until ``count`` is reached)."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            doc = self.request("GET", path, params={**(params or {}), "page": page, "size": size})
            batch = doc.get("data") or []
            items.extend(batch)
            count = doc.get("count")
            if not batch or count is None or len(items) >= int(count):
                return items
            page += 1

    # ------------------------------------------------------------------ resources

    def permissions(self) -> dict[str, Any]:
        return self.data("GET", "/api/v1/permission/")

    def create_token(self, body: dict[str, Any]) -> str:
        data = self.data("POST", "/api/v1/token/", json=body)
        return data["token"]

    def namespaces(self) -> list[dict[str, Any]]:
        return self.paginate("/api/v1/namespace/")

    def environments(self, **filters: Any) -> list[dict[str, Any]]:
        return self.paginate("/api/v1/environment/", {k: v for k, v in filters.items() if v not in (None, (), [])})

    def builds(self, **filters: Any) -> list[dict[str, Any]]:
        return self.paginate("/api/v1/build/", {k: v for k, v in filters.items() if v not in (None, (), [])})

    def environment(self, namespace: str, name: str) -> dict[str, Any]:
        return self.data("GET", f"/api/v1/environment/{_q(namespace)}/{_q(name)}/")

    def find_environment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The environment, or None if it (or its namespace) does not exist; other errors raise."""
        self._login()
        path = f"/api/v1/environment/{_q(namespace)}/{_q(name)}/"
        resp = self._send("GET", path)
        if resp.status_code == 404:
            return None
        if resp.status_code >= 300:
            raise http_error(resp.status_code, "GET", str(resp.request.url), resp.content, self.config.credentials)
        return resp.json().get("data")

    def submit(self, specification: str, *, namespace: str, environment_name: str | None = None,
               is_lockfile: bool = False) -> int:
        """Submit an environment.yaml, or a conda-lock file with ``is_lockfile``
        (``POST /api/v1/specification/``); the new build's id."""
        body: dict[str, Any] = {"namespace": namespace, "specification": specification}
        if environment_name:
            body["environment_name"] = environment_name
        if is_lockfile:
            body["is_lockfile"] = True
        return int(self.data("POST", "/api/v1/specification/", json=body)["build_id"])

    def follow_log(self, build_id: int, read_timeout: float | None = None) -> Iterator[LogLine]:
        """The build's log lines from the start, live, until it ends (see :mod:`._follow`)."""
        self._login()
        kwargs = {} if read_timeout is None else {"read_timeout": read_timeout}
        return follow(self._http, self.config.url, build_id, self.config.credentials, **kwargs)

    def build(self, build_id: int) -> dict[str, Any]:
        return self.data("GET", f"/api/v1/build/{int(build_id)}/")

    def solve(self, channels: list[str], conda: list[str], pip: list[str], timeout: float = 600.0) -> list[dict[str, Any]]:
        params = [("channel", c) for c in channels] + [("conda", c) for c in conda] + [("pip", p) for p in pip]
        doc = self.request("GET", "/api/v1/specification/", params=params, timeout=timeout)
        if isinstance(doc, dict):
            solved = doc.get("solve")
            if solved is None and isinstance(doc.get("data"), dict):
                solved = doc["data"].get("solve")
            if isinstance(solved, list):
                return solved
        raise CLIError(f"unexpected answer to the solve request from {self.config.url}")

    def latest_build(self, environment: dict[str, Any]) -> dict[str, Any] | None:
        """The newest build of an environment (highest id), whatever its state."""
        builds = self.builds(environment_id=environment.get("id"))
        return max(builds, key=lambda b: int(b["id"]), default=None)

    def completed_current_build_id(self, environment: dict[str, Any]) -> int | None:
        """The environment's current build id if that build is COMPLETED, else None.

        A new environment's current build is its first build from submission on (upstream's
        schema), so "current" alone does not mean there is something to run or download. Our
        server embeds the current build; an upstream one costs a request for it.
        """
        build_id = environment.get("current_build_id")
        if build_id is None:
            return None
        current = environment.get("current_build")
        if not (isinstance(current, dict) and current.get("id") == build_id):
            current = self.build(int(build_id))
        return int(build_id) if current.get("status") == "COMPLETED" else None

    def resolve(self, uri: BuildURI, newest: bool = False) -> int:
        """The build id a URI names; for ``ns/env:id`` check the build belongs to the env.

        ``ns/env`` means the environment's current build once it is completed, or with
        ``newest`` its most recent one: a new environment's current build is its first one,
        which may still be queued, and after an update the build worth waiting for is the new one.
        """
        if not uri.is_environment:
            assert uri.build_id is not None
            return uri.build_id
        assert uri.namespace and uri.environment
        env = self.environment(uri.namespace, uri.environment)
        if uri.build_id is None:
            current = self.completed_current_build_id(env)
            latest = self.latest_build(env) if newest or current is None else None
            if newest and latest is not None:
                return int(latest["id"])
            if current is None:
                state = ""
                if latest and latest.get("status") in ("FAILED", "CANCELED"):
                    state = f" (its newest build {latest['id']} {latest['status']}: see 'conda-store logs {latest['id']}')"
                elif latest:
                    state = f" (build {latest['id']} is {latest.get('status')}; try 'conda-store wait {uri}')"
                raise CLIError(f"environment {uri} has no completed build yet{state}")
            return current
        build = self.build(uri.build_id)
        if build.get("environment_id") != env.get("id"):
            raise CLIError(f"build {uri.build_id} does not belong to environment {uri.namespace}/{uri.environment}")
        return uri.build_id

    # ------------------------------------------------------------------ artifacts

    def download(
        self,
        build_id: int,
        artifact: str,
        dest: Path,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> Download:
        """Stream an artifact to ``dest`` (written via a temp file), following the redirect.

        The artifact endpoint may answer directly or 307 to storage / a presigned URL. A
        redirect to another origin gets no Authorization header (a presigned URL carries its
        own credentials, and our token must not leak to the storage host).
        """
        self._login()
        path = f"/api/v1/build/{int(build_id)}/{ARTIFACT_PATHS[artifact]}"
        url = self.config.url + path
        origin = httpx.URL(self.config.url)
        tmp = dest.with_name(f".{dest.name}.part")
        for _ in range(6):
            target = httpx.URL(url)
            same_origin = (target.scheme, target.host, target.port) == (origin.scheme, origin.host, origin.port)
            headers = dict(self._http.headers) if same_origin else {"User-Agent": "conda-store-jupyter-cli"}
            cookies = self._http.cookies if same_origin else None
            try:
                with httpx.stream(
                    "GET", url, headers=headers, cookies=cookies, verify=self.config.verify_ssl,
                    timeout=httpx.Timeout(60.0, read=300.0), follow_redirects=False,
                ) as resp:
                    if resp.status_code in (301, 302, 303, 307, 308):
                        url = str(resp.url.join(resp.headers["location"]))
                        continue
                    if resp.status_code >= 300:
                        resp.read()
                        pending = pending_artifact(resp.status_code, resp.content, resp.headers.get("retry-after")) \
                            if same_origin else None
                        if pending is not None:
                            raise pending
                        raise http_error(resp.status_code, "GET", url, resp.content,
                                         self.config.credentials if same_origin else None)
                    total = int(resp.headers["content-length"]) if "content-length" in resp.headers else None
                    digest = hashlib.sha256()
                    size = 0
                    with open(tmp, "wb") as fh:
                        for chunk in resp.iter_bytes(1 << 20):
                            fh.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
                            if progress:
                                progress(size, total)
                    tmp.replace(dest)
                    return Download(dest, size, digest.hexdigest())
            except httpx.TimeoutException as exc:
                tmp.unlink(missing_ok=True)
                raise CLIError(f"timed out downloading {artifact} of build {build_id} from {url}: {exc or 'timeout'}") from None
            except httpx.HTTPError as exc:
                tmp.unlink(missing_ok=True)
                raise connection_error(self.config.url if same_origin else url, exc) from None
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        raise CLIError(f"too many redirects downloading {artifact} of build {build_id}")

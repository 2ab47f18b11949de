"""Where the server is and how to authenticate: options, then environment, then JupyterHub.

Order for the URL: ``--conda-store-url`` > ``CONDA_STORE_URL`` > JupyterHub discovery >
``http://localhost:8080``. Inside a JupyterHub single-user server the hub exports
``JUPYTERHUB_API_URL`` (``<scheme>://<host>/<base>hub/api``) and ``JUPYTERHUB_API_TOKEN``; the
service lives at ``<scheme>://<host>/<base>services/<name>/`` (``name`` from
``CONDA_STORE_SERVICE_NAME``, default ``conda-store``). When the hub also exports a non-empty
``JUPYTERHUB_PUBLIC_HUB_URL`` we derive from it instead: the API URL often points at the hub
process itself, which does not route ``/services/``; the public URL is the proxy, which does.

Auth: ``--auth``/``CONDA_STORE_AUTH`` choose explicitly. Without a choice: ``CONDA_STORE_TOKEN``
→ token; ``CONDA_STORE_USERNAME`` + ``CONDA_STORE_PASSWORD`` → basic; ``JUPYTERHUB_API_TOKEN``
→ the hub token (``Authorization: token ...``), but only for a server discovered from, or on the
same host as, the hub: the hub token is the user's identity and must not be sent to an
arbitrary ``CONDA_STORE_URL``. Otherwise anonymous.

Kept free of heavy imports: the fast ``run`` path resolves its config through this module.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from ._errors import CLIError
from ._record import Record

TYPE_CHECKING = False  # typing itself costs ~5 ms on the cached `run` path; mypy reads the name
if TYPE_CHECKING:
    from typing import Mapping

DEFAULT_URL = "http://localhost:8080"
DEFAULT_SERVICE_NAME = "conda-store"
AUTH_CHOICES = ("none", "token", "basic")


class Config(Record):
    """Resolved connection settings. ``url`` has no trailing slash and includes any url prefix.

    ``auth`` is none | token | basic | jupyterhub; ``token`` and ``password`` never appear in repr.
    """

    __slots__ = ("url", "auth", "token", "username", "password", "verify_ssl", "url_source", "auth_source")
    _defaults = {"auth": "none", "token": None, "username": None, "password": None, "verify_ssl": True,
                 "url_source": "default", "auth_source": "anonymous"}
    _secret = frozenset({"token", "password"})

    url: str
    auth: str
    token: str | None
    username: str | None
    password: str | None
    verify_ssl: bool
    url_source: str
    auth_source: str

    def auth_headers(self) -> dict[str, str]:
        """Headers sent with every API request (basic auth logs in first, see the client)."""
        if self.auth == "token" and self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.auth == "jupyterhub" and self.token:
            # JupyterHub's own scheme; our server (like any HubAuth service) accepts it.
            return {"Authorization": f"token {self.token}"}
        return {}

    @property
    def credentials(self) -> str | None:
        """Where the credential sent comes from (for error messages); None when anonymous."""
        return None if self.auth == "none" else self.auth_source

    @property
    def cache_key(self) -> str:
        """A stable, filesystem-safe key for this server (build ids are per server)."""
        try:  # CPython's own sha256: hashlib would load OpenSSL (~3 ms) for one short digest
            from _sha256 import sha256  # type: ignore[import-not-found]  # CPython <= 3.11
        except ImportError:
            try:
                from _sha2 import sha256  # type: ignore[import-not-found,no-redef]  # CPython >= 3.12
            except ImportError:
                from hashlib import sha256  # type: ignore[no-redef]
        return sha256(self.url.encode()).hexdigest()[:10]


def _normalise_url(url: str, what: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CLIError(f"{what} {url!r} is not an http(s) URL (example: http://localhost:8080)")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def hub_service_url(environ: Mapping[str, str]) -> str | None:
    """The conda-store service URL derived from JupyterHub's environment, or None outside a hub."""
    base = environ.get("JUPYTERHUB_PUBLIC_HUB_URL") or environ.get("JUPYTERHUB_API_URL")
    if not base:
        return None
    name = environ.get("CONDA_STORE_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    if "/" in name or name in (".", ".."):
        raise CLIError(f"CONDA_STORE_SERVICE_NAME {name!r} is not a service name")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CLIError(f"JupyterHub URL {base!r} is not an http(s) URL")
    path = parts.path.rstrip("/")
    for suffix in ("/hub/api", "/hub"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return urlunsplit((parts.scheme, parts.netloc, f"{path}/services/{name}", "", ""))


def _hub_hosts(environ: Mapping[str, str]) -> set[str]:
    hosts = set()
    for var in ("JUPYTERHUB_API_URL", "JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_PUBLIC_URL"):
        value = environ.get(var)
        if value:
            hosts.add(urlsplit(value).netloc)
    return hosts


def resolve_config(
    url: str | None = None,
    auth: str | None = None,
    no_verify_ssl: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Combine options and environment into a Config; raise CLIError on contradictions."""
    env = os.environ if environ is None else environ
    if url:
        url, url_source = _normalise_url(url, "--conda-store-url"), "--conda-store-url"
    elif env.get("CONDA_STORE_URL"):
        url, url_source = _normalise_url(env["CONDA_STORE_URL"], "CONDA_STORE_URL"), "CONDA_STORE_URL"
    elif (hub_url := hub_service_url(env)) is not None:
        url, url_source = hub_url, "JupyterHub"
    else:
        url, url_source = DEFAULT_URL, "default"
    verify = not (no_verify_ssl or env.get("CONDA_STORE_NO_VERIFY", "").lower() in ("1", "true", "yes"))

    hub_token = env.get("JUPYTERHUB_API_TOKEN")
    hub_ok = bool(hub_token) and (
        url_source == "JupyterHub" or urlsplit(url).netloc in _hub_hosts(env)
    )
    choice = (auth or env.get("CONDA_STORE_AUTH") or "").strip().lower() or None
    if choice is not None and choice not in AUTH_CHOICES:
        raise CLIError(f"unknown auth method {choice!r}: use one of {', '.join(AUTH_CHOICES)}")
    common = {"url": url, "verify_ssl": verify, "url_source": url_source}

    if choice == "none":
        return Config(**common)
    if choice == "token" or (choice is None and env.get("CONDA_STORE_TOKEN")):
        if env.get("CONDA_STORE_TOKEN"):
            return Config(auth="token", token=env["CONDA_STORE_TOKEN"], auth_source="CONDA_STORE_TOKEN", **common)
        if hub_token:
            # An explicit --auth token with only a hub token around: the user asked for it.
            return Config(auth="jupyterhub", token=hub_token, auth_source="JUPYTERHUB_API_TOKEN", **common)
        raise CLIError("--auth token needs a token: set CONDA_STORE_TOKEN")
    user, password = env.get("CONDA_STORE_USERNAME"), env.get("CONDA_STORE_PASSWORD")
    if choice == "basic" or (choice is None and user and password):
        if not user or not password:
            raise CLIError("--auth basic needs CONDA_STORE_USERNAME and CONDA_STORE_PASSWORD")
        return Config(auth="basic", username=user, password=password, auth_source="CONDA_STORE_USERNAME", **common)
    if hub_ok:
        return Config(auth="jupyterhub", token=hub_token, auth_source="JUPYTERHUB_API_TOKEN", **common)
    return Config(**common)

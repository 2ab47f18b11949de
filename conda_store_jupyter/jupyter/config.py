"""Which conda-store service the extension talks to, and with which credential.

The rules are the CLI's (:func:`conda_store_jupyter.cli._config.resolve_config`), so a notebook
terminal and the Lab panel always reach the same service as the same user:

- URL: ``c.CondaStoreExtension.url`` > ``CONDA_STORE_URL`` > JupyterHub discovery
  (``JUPYTERHUB_PUBLIC_HUB_URL`` or ``JUPYTERHUB_API_URL`` → ``<hub>/services/conda-store``).
  Unlike the CLI there is no ``localhost:8080`` fallback: a Lab panel silently talking to whatever
  listens there would be a surprise, so "not configured" is an answer of its own.
- Credential: ``c.CondaStoreExtension.token`` > ``CONDA_STORE_TOKEN`` > the single-user server's
  ``JUPYTERHUB_API_TOKEN``, the latter only for a service found through, or on the same host as,
  the hub (the hub token is the user's identity and must not go to an arbitrary URL).

Kept free of jupyter-server imports so it can be tested and reused on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from ..cli._config import resolve_config
from ..cli._errors import CLIError

HOW_TO_CONFIGURE = (
    "set CONDA_STORE_URL (and CONDA_STORE_TOKEN) in the environment of jupyter-server, "
    "or c.CondaStoreExtension.url (and .token) in its Jupyter config; under JupyterHub the "
    "service is found at <hub>/services/conda-store when the hub sets c.JupyterHub.public_url"
)

# The CLI's username/password mode logs in with a form and keeps a cookie; a server extension
# has no business holding a user's password, so those variables are not looked at here.
_IGNORED = frozenset({"CONDA_STORE_USERNAME", "CONDA_STORE_PASSWORD"})


@dataclass(frozen=True)
class ServiceTarget:
    """Where requests go. ``url`` (no trailing slash) is ``None`` when nothing is configured;
    ``problem`` then says why, in words for the panel."""

    url: str | None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    verify_ssl: bool = True
    url_source: str = "unconfigured"
    auth: str = "none"  # none | token | jupyterhub
    problem: str | None = None

    @property
    def configured(self) -> bool:
        return self.url is not None


def resolve_target(url: str = "", token: str = "", environ: Mapping[str, str] | None = None) -> ServiceTarget:
    """Resolve the traits (``url``, ``token``: empty = unset) and the environment."""
    env = dict(os.environ if environ is None else environ)
    for name in _IGNORED:
        env.pop(name, None)
    if token:
        # An explicit token in the Jupyter config wins over any variable, as CONDA_STORE_TOKEN does.
        env["CONDA_STORE_TOKEN"] = token
        env.pop("CONDA_STORE_AUTH", None)
    if env.get("CONDA_STORE_AUTH", "").strip().lower() == "basic":
        return ServiceTarget(url=None, problem="CONDA_STORE_AUTH=basic is not supported by the Jupyter "
                                               "extension: use CONDA_STORE_TOKEN or c.CondaStoreExtension.token")
    try:
        config = resolve_config(url=url or None, environ=env)
    except CLIError as exc:
        # The trait goes in where the CLI's option would: name it as the user wrote it.
        problem = str(exc).replace("--conda-store-url", "c.CondaStoreExtension.url")
        return ServiceTarget(url=None, problem=f"conda-store is misconfigured: {problem}")
    if config.url_source == "default":
        return ServiceTarget(url=None, problem=f"no conda-store service is configured: {HOW_TO_CONFIGURE}")
    return ServiceTarget(
        url=config.url,
        headers=config.auth_headers(),
        verify_ssl=config.verify_ssl,
        url_source="c.CondaStoreExtension.url" if url else config.url_source,
        auth=config.auth,
    )


def registry_host(public_url: str) -> str:
    """``host[:port]`` for ``docker pull`` lines: the registry is always at the host's root."""
    return urlsplit(public_url).netloc


__all__ = ["HOW_TO_CONFIGURE", "ServiceTarget", "registry_host", "resolve_target"]

"""``CondaStoreExtension``: the jupyter-server extension application (traits, client, routes)."""

from __future__ import annotations

import httpx
from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Unicode

from .config import ServiceTarget, resolve_target
from .handlers import ConfigHandler, ForwardHandler
from .kernels.setup import KernelTraits

URL_PREFIX = "conda-store"
"""Every route of the extension lives under ``<base_url>conda-store/``."""


class CondaStoreExtension(KernelTraits, ExtensionApp):
    """Forward ``<base_url>conda-store/api/v1/…`` to the conda-store service, adding the credential
    server-side, so JupyterLab never logs in to the service and never sees a token."""

    name = "conda_store_jupyter"
    description = __doc__

    url = Unicode(
        "",
        help="""URL of the conda-store service including its prefix, e.g.
        ``https://hub.example.org/services/conda-store``. Empty: ``$CONDA_STORE_URL``, else found
        through JupyterHub (``<hub>/services/conda-store``, the same rules as the ``conda-store``
        CLI).""",
    ).tag(config=True)

    token = Unicode(
        "",
        help="""API token sent to the service (``Authorization: Bearer``). Empty:
        ``$CONDA_STORE_TOKEN``, else the single-user server's ``$JUPYTERHUB_API_TOKEN`` when the
        service is the hub's (found through the hub, or on the hub's host). Never sent to the
        browser.""",
    ).tag(config=True)

    public_url = Unicode(
        "",
        help="""URL of the service as users' machines reach it, for the ``docker pull`` and
        download lines the panel shows (``docker pull <host>/<namespace>/<environment>``). Empty:
        the service URL.""",
    ).tag(config=True)

    request_timeout = Float(
        60.0,
        help="""Seconds to wait for the service to answer, or to send the next part of an answer.
        Log streams are not cut by it: the service sends a keep-alive every 15 s.""",
    ).tag(config=True)

    connect_timeout = Float(
        10.0,
        help="Seconds to wait for a connection to the service before answering 504.",
    ).tag(config=True)

    target: ServiceTarget
    client: httpx.AsyncClient

    def initialize_settings(self) -> None:
        self.target = resolve_target(self.url, self.token)
        if self.target.configured:
            self.log.info("conda-store: forwarding %s/conda-store/ to %s (from %s, auth %s)",
                          self.serverapp.base_url.rstrip("/"), self.target.url, self.target.url_source,
                          self.target.auth)
        else:
            self.log.warning("conda-store: %s", self.target.problem)
        timeout = httpx.Timeout(self.request_timeout, connect=self.connect_timeout)
        # Redirects go back to the browser (a presigned S3 URL is for it to follow, not for us).
        self.client = httpx.AsyncClient(timeout=timeout, verify=self.target.verify_ssl,
                                        follow_redirects=False)
        self.setup_kernels()

    def initialize_handlers(self) -> None:
        self.handlers.extend([
            (rf"/{URL_PREFIX}/config/?", ConfigHandler),
            (rf"/{URL_PREFIX}/(api/v1/.*)", ForwardHandler),
            *self.kernel_handlers(URL_PREFIX),
        ])

    async def _start_jupyter_server_extension(self, serverapp) -> None:  # noqa: ANN001 - jupyter-server's hook
        self.start_kernel_polling()

    @property
    def service_public_url(self) -> str | None:
        return (self.public_url or self.target.url or "").rstrip("/") or None

    async def stop_extension(self) -> None:
        await self.stop_kernels()
        await self.client.aclose()

"""The extension's kernel traits and how it sets the kernel machinery up (mixed into
``CondaStoreExtension`` so ``app.py`` stays about forwarding)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tornado.ioloop import IOLoop
from traitlets import Bool, Float, Unicode
from traitlets.config import LoggingConfigurable

from . import backend as backends
from .backend import KernelBackend
from .resolve import LaunchOptions


class KernelTraits(LoggingConfigurable):
    enable_kernels = Bool(
        True,
        help="""Offer every readable environment whose current build has a kernel package
        (ipykernel, r-irkernel, xeus-*) as a Jupyter kernel named ``ns/env`` that always starts the
        environment's current build (or the notebook's pinned one).""",
    ).tag(config=True)

    kernel_spec_dir = Unicode(
        "",
        help="""Directory the extension writes its kernelspecs to (one per environment; it holds
        nothing else, and is added to the server's ``KernelSpecManager.kernel_dirs``). Empty:
        ``<jupyter data dir>/conda-store/<service key>/kernels``, kept across restarts so a
        notebook finds its kernel even while the service is down (it then explains why); with
        ``JUPYTER_PATH=<jupyter data dir>/conda-store/<service key>`` other Jupyter tools
        (nbclient, papermill) in this environment see the kernels too.""",
    ).tag(config=True)

    kernel_refresh_interval = Float(
        2.0,
        help="""Seconds between checks of the service's environment list (one query there; an
        unchanged list is a bodiless 304). A completed build appears as a kernel within this
        time. 0 disables the poller (the panel's refresh still works).""",
    ).tag(config=True)

    use_store_path = Bool(
        True,
        help="""Run a build from the store's own directory when this server sees it (same host or
        shared filesystem) and it verifiably is that build. False: always fetch the build's
        conda-pack archive into the local cache (e.g. a store path that exists here but is a
        different store).""",
    ).tag(config=True)

    archive_wait = Float(
        300.0,
        help="""Seconds a kernel start waits for a build's conda-pack archive that is still being
        made (the service answers 202/409 with Retry-After) before starting the fallback kernel.""",
    ).tag(config=True)

    def setup_kernels(self) -> None:
        if not self.enable_kernels:
            backends.install(None)
            return
        target = self.target  # type: ignore[attr-defined]
        spec_dir = Path(self.kernel_spec_dir) if self.kernel_spec_dir else self._default_spec_dir(target)
        serverapp: Any = self.serverapp  # type: ignore[attr-defined]
        ksm = getattr(serverapp, "kernel_spec_manager", None)
        if ksm is None or not hasattr(ksm, "kernel_dirs"):
            self.log.warning("conda-store: the server's kernel spec manager (%s) has no kernel_dirs; "
                             "environment kernels are not listed", type(ksm).__name__)
        elif str(spec_dir) not in ksm.kernel_dirs:
            ksm.kernel_dirs.append(str(spec_dir))  # last: never shadows a kernel the user has
        options = LaunchOptions(use_store_path=self.use_store_path, archive_wait=self.archive_wait)
        backend = KernelBackend(target, self.client, options, spec_dir=spec_dir,  # type: ignore[attr-defined]
                                root_dir=getattr(serverapp, "root_dir", None))
        backends.install(backend)
        # The loop is not running yet during initialize; start the poller on its first turn.
        IOLoop.current().add_callback(self.start_kernel_polling)

    @staticmethod
    def _default_spec_dir(target: Any) -> Path:
        from jupyter_core.paths import jupyter_data_dir

        from ...cli._config import Config

        key = Config(url=target.url).cache_key if target.configured else "unconfigured"
        # <dir>/kernels/<name>/kernel.json: JUPYTER_PATH=<dir> shows them to any Jupyter tool too
        return Path(jupyter_data_dir()) / "conda-store" / key / "kernels"

    def start_kernel_polling(self) -> None:
        backend = backends.current()
        if backend is not None:
            backend.start_polling(self.kernel_refresh_interval)

    def kernel_handlers(self, prefix: str) -> list[tuple[str, type]]:
        from .handlers import handlers

        return handlers(prefix) if self.enable_kernels else []

    async def stop_kernels(self) -> None:
        backend = backends.current()
        if backend is not None:
            await backend.stop()
            backends.install(None)

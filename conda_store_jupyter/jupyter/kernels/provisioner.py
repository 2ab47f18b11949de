"""``CondaStoreProvisioner``: the ``jupyter_client.kernel_provisioners`` entry point ``conda-store``.

A ``LocalProvisioner`` (the kernel is a local process, as for any local kernelspec) whose
``pre_launch`` first decides what to run (:func:`.resolve.resolve_launch`) and then lets the
local provisioner write the connection file and format the command. It runs at every start and
restart, so a restart after a rebuild runs the new build while a running kernel, started from
its build's own prefix, is never disturbed. Its traits ``namespace`` and ``environment`` come
from the kernelspec (``metadata.kernel_provisioner.config``).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Unicode

from . import backend as backends
from .records import LaunchPlan, RunningKernel
from .resolve import read_pin, resolve_launch

_DROPPED = ("PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__", "PYTHONEXECUTABLE")
"""Variables of the server's own python that would point the environment's python elsewhere."""


class CondaStoreProvisioner(LocalProvisioner):  # type: ignore[misc]
    namespace = Unicode("", help="Namespace of the environment this kernel runs (from the kernelspec).").tag(config=True)
    environment = Unicode("", help="Name of the environment this kernel runs (from the kernelspec).").tag(config=True)

    plan: LaunchPlan | None = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        began = time.monotonic()
        backend = backends.current() or backends.standalone()
        env = dict(kwargs.get("env") or os.environ)
        pin = read_pin(env.get("JPY_SESSION_NAME"), backend.root_dir or self._root_dir(), self.namespace,
                       self.environment)
        plan = await resolve_launch(backend.service, backend.source, backend.options, self.namespace,
                                    self.environment, pin)
        self.plan = plan
        if plan.error:
            self.log.warning("conda-store: kernel %s/%s starts the fallback kernel: %s",
                             self.namespace, self.environment, plan.error)
        else:
            self.log.info("conda-store: kernel %s/%s runs build %s from %s (%s; resolved in %.0f ms)", self.namespace,
                          self.environment, plan.build_id, plan.prefix, plan.source, (time.monotonic() - began) * 1000)
        for name in _DROPPED:
            env.pop(name, None)
        env.update(plan.env)
        kwargs["env"] = env
        # The km formats the command from its kernelspec's argv; this spec object is the km's own.
        self.kernel_spec.argv = list(plan.argv)
        return await super().pre_launch(**kwargs)

    async def post_launch(self, **kwargs: Any) -> None:
        await super().post_launch(**kwargs)
        backend = backends.current()
        if backend is not None and self.plan is not None and self.kernel_id:
            p = self.plan
            backend.running[self.kernel_id] = RunningKernel(
                kernel_id=self.kernel_id, namespace=p.namespace, environment=p.environment, build_id=p.build_id,
                lockfile_sha256=p.lockfile_sha256, prefix=p.prefix, source=p.source, pinned=p.pinned,
                started=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), error=p.error)

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        backend = backends.current()
        if backend is not None and not restart and self.kernel_id:
            backend.running.pop(self.kernel_id, None)

    def _root_dir(self) -> str | None:
        # km -> MappingKernelManager, which knows the server's root_dir
        km = self.parent
        mkm = getattr(km, "parent", None)
        return getattr(mkm, "root_dir", None)


__all__ = ["CondaStoreProvisioner"]

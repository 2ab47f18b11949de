"""Every readable environment as ONE Jupyter kernel that follows the environment's current build.

How it fits together, and why:

- **Kernel specs on disk + a provisioner** (not a ``KernelSpecManager`` subclass). The extension
  writes one kernelspec directory per environment into a directory of its own and appends that
  directory to the server's ``KernelSpecManager.kernel_dirs``. jupyter-server reads kernelspecs
  from disk on every ``GET /api/kernelspecs`` (no cache), so a spec written at second *t* is
  listed at *t*: no restart, no 60 s cache. Replacing the server's ``kernel_spec_manager_class``
  instead would have to be configured before the server starts and would fight any other spec
  manager a deployment uses (nb_conda_kernels, a gateway); an extra directory adds our kernels
  without touching anyone else's. Each spec names our provisioner
  (``metadata.kernel_provisioner``, the ``jupyter_client.kernel_provisioners`` entry point
  ``conda-store``), which resolves the build *at launch*; so the spec's name and argv never
  depend on a build and one spec serves every build: ``conda-store-<len(ns)>-<ns>-<env>``
  (length-prefixed, since ``-``, ``.`` and ``_`` may all occur in names), display name
  ``ns/env``. Because resolution happens in the provisioner, kernels also work for
  nbclient/papermill in the server's environment when the spec directory is on their
  ``JUPYTER_PATH`` (the specs are not put in the user's own kernels directory: other Jupyter
  installations there, without our provisioner, would warn about them at every listing).
- **Freshness**: the extension polls ``GET /api/v1/kernels/`` (one SQL query on the service,
  ``If-None-Match`` so an unchanged list is a bodiless 304) every ``kernel_refresh_interval``
  seconds and rewrites only specs that changed; the Lab panel may force a refresh (``POST
  conda-store/kernels/refresh``) when it sees a build complete, then refresh Lab's kernelspecs.
- **Launch** (:mod:`.resolve`): the notebook's pin (``metadata.conda_store.pin_build`` of the
  saved notebook named by ``JPY_SESSION_NAME``) or else the environment's current build; the
  kernel runs from the BUILD's own prefix (never the environment symlink a rebuild moves), so a
  rebuild cannot disturb a running kernel and a restart picks up the new build. The store path
  is used when this server sees it and it verifiably is that build; otherwise the build's
  conda-pack archive is fetched with the extension's credential into the verified cache of
  ``conda-store run`` (:mod:`conda_store_jupyter.cli._run`).
- **Fallback** (:mod:`.fallback`): when anything above fails, a tiny kernel (the server's own
  python, pyzmq + jupyter_client's Session) answers every execution with what went wrong and what
  to do, instead of a kernel that never starts.
"""

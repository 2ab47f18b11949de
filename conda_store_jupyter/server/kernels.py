"""``GET /api/v1/kernels/``: every readable environment as a Jupyter server needs it for kernels.

One database query for all environments (:func:`api.kernels.list_kernel_environments`), so a
user's server may poll it every second or two. Filters: ``namespace`` and ``environment`` (exact
names), and with both, ``build_id`` to ask about a pinned build instead of the current one.

Each item: ``namespace``, ``environment``, ``environment_id``, ``current_build_id`` and ``build``
(null without one): ``id``, ``status``, ``deleted``, ``scheduled_on``, ``specification_sha256``,
``build_key``, ``prefix`` (the build's OWN directory in the store, not the environment symlink a
rebuild moves), ``kernel`` (the preferred kernel package ``{name, version, build, language}`` or
null), ``kernel_packages``, ``has_archive`` and ``lockfile_sha256``.

The lockfile's sha256 is not in the database; it is hashed from storage once per lockfile and
remembered (a build's lockfile never changes, and its key contains the build key), so a poll
costs the one query and no storage reads.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

from ..api import list_kernel_environments
from ..api.kernels import KernelEnvironment, KernelPackage
from ..exceptions import ValidationError
from ..naming import validate_name
from .base import BaseHandler, run_sync
from .serialize import timestamp

_LOCK_HASHES: OrderedDict[str, str | None] = OrderedDict()
_LOCK_HASHES_MAX = 8192
_LOCK = threading.Lock()


def lockfile_sha256(storage: Any, key: str | None) -> str | None:
    """sha256 of a stored lockfile (cached by key); None when there is none or it cannot be read."""
    if key is None:
        return None
    with _LOCK:
        if key in _LOCK_HASHES:
            _LOCK_HASHES.move_to_end(key)
            return _LOCK_HASHES[key]
    digest = hashlib.sha256()
    try:
        for chunk in storage.iter_chunks(key):
            digest.update(chunk)
        value: str | None = digest.hexdigest()
    except Exception:  # noqa: BLE001 - a missing or unreadable lockfile is "unknown", not an error
        return None  # not cached: it may appear (storage retried) later
    with _LOCK:
        _LOCK_HASHES[key] = value
        while len(_LOCK_HASHES) > _LOCK_HASHES_MAX:
            _LOCK_HASHES.popitem(last=False)
    return value


def _package(p: KernelPackage) -> dict[str, Any]:
    return {"name": p.name, "version": p.version, "build": p.build, "language": p.language}


def kernel_environment(entry: KernelEnvironment, storage: Any) -> dict[str, Any]:
    b = entry.build
    build = None
    if b is not None:
        kernel = b.kernel_package
        build = {
            "id": b.id,
            "status": b.status.value,
            "deleted": b.deleted,
            "scheduled_on": timestamp(b.scheduled_on),
            "specification_sha256": b.specification_sha256,
            "build_key": b.build_key,
            "prefix": str(b.prefix),
            "kernel": _package(kernel) if kernel is not None else None,
            "kernel_packages": [_package(p) for p in b.packages],
            "has_archive": b.has_archive,
            "lockfile_sha256": lockfile_sha256(storage, b.lockfile_key),
        }
    return {
        "namespace": entry.namespace,
        "environment": entry.environment,
        "environment_id": entry.environment_id,
        "current_build_id": entry.current_build_id,
        "build": build,
    }


class KernelEnvironmentsHandler(BaseHandler):
    async def get(self) -> None:
        namespace = self.query("namespace")
        environment = self.query("environment")
        build_id = self.query_int("build_id")
        if namespace is not None:
            validate_name(namespace, "namespace")
        if environment is not None:
            validate_name(environment, "environment name")
        if build_id is not None and (namespace is None or environment is None):
            raise ValidationError("build_id needs namespace and environment (a build of which environment?)")
        store = self.store

        def work(db):
            return list_kernel_environments(db, self.bindings(db), store.store_path, namespace=namespace,
                                            environment=environment, build_id=build_id)

        entries = await self.in_db(work)
        data = await run_sync(lambda: [kernel_environment(e, store.storage) for e in entries])
        self.ok(data)


HANDLERS = [
    (r"/api/v1/kernels/", KernelEnvironmentsHandler),
]

"""Registry manifest lookup without a server: the manifest-info cache under concurrent use."""

from __future__ import annotations

import json
import sys
import threading

from conda_store_jupyter.server import registry_manifests


class _Storage:
    """Serves a tiny Docker v2 manifest for any ``blobs/sha256/<hex>`` key (no I/O)."""

    def get_bytes(self, key: str) -> bytes:
        n = int(key.rsplit("/", 1)[1][-8:], 16)
        return json.dumps({
            "schemaVersion": 2, "mediaType": registry_manifests.MANIFEST_V2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": f"sha256:{n:064x}", "size": 1},
            "layers": [],
        }).encode()


def test_manifest_cache_is_safe_from_executor_threads(monkeypatch) -> None:
    """Handlers call manifest_info from executor threads; with the cache unlocked, one thread's
    ``move_to_end`` raced another's eviction (KeyError) about every run of this test."""
    monkeypatch.setattr(registry_manifests, "_MANIFEST_CACHE_SIZE", 4)  # evict all the time
    monkeypatch.setattr(registry_manifests, "_MANIFEST_CACHE", type(registry_manifests._MANIFEST_CACHE)())
    storage, errors = _Storage(), []

    def pull(t: int) -> None:
        try:
            for n in range(3000):
                info = registry_manifests.manifest_info(storage, f"sha256:{(n * 7 + t) % 9:064x}")
                assert info is not None and len(info.blobs) == 1
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to expose the race
    try:
        threads = [threading.Thread(target=pull, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(registry_manifests._MANIFEST_CACHE) <= 4

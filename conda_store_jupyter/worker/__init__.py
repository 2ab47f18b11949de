"""The build queue and its workers (RQ on Redis).

* :mod:`.queue`     ``BuildQueue`` (enqueue, cancel, delete) used by the server via ``CondaStore.queue``
* :mod:`.logs`      live build logs in a Redis stream; the stored LOGS artifact afterwards
* :mod:`.tasks`     RQ job functions and the supervised build child process
* :mod:`.reconcile` turns builds whose worker or job died into FAILED/CANCELED
* :mod:`.embedded`  private redis-server + worker processes for ``conda-store-server --standalone``
* ``python -m conda_store_jupyter.worker`` / ``conda-store-worker``: the worker command
"""

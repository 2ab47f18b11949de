"""The build queue and its workers (RQ on Redis).

* :mod:`.queue`     ``BuildQueue(store)``: enqueue, cancel, delete (used by the server and the API layer)
* :mod:`.logs`      live build logs in a Redis stream; the stored LOGS artifact afterwards
* :mod:`.tasks`     RQ job functions and the supervised build child process
* :mod:`.reconcile` re-enqueues lost jobs, queues interrupted builds again (or fails them)
* :mod:`.runner`    ``BuildWorker``: the flat RQ worker (no threads; runs the reconciler)
* :mod:`.embedded`  private redis-server + worker processes for ``conda-store-server --standalone``
* ``python -m conda_store_jupyter.worker`` / ``conda-store-worker``: the worker command
"""

"""The build queue and its workers (RQ on Redis).

* :mod:`.queue`     ``BuildQueue(store)``: enqueue, cancel, delete (used by the server and the API layer)
* :mod:`.logs`      live build logs in a Redis stream; the stored LOGS artifact afterwards
* :mod:`.lifecycle` the one owner of build state: every build and artifact state change (compare-and-set)
* :mod:`.tasks`     RQ job functions and the supervised build child process
* :mod:`.settings`  ``CondaStore`` configuration -> the pipeline's typed ``BuildSettings``
* :mod:`.record`    packages and artifact rows of a build; :mod:`.links` the ``envs/<name>`` link
* :mod:`.artifacts` what the jobs making artifacts after COMPLETED share (queueing, liveness, log lines)
* :mod:`.archives`  the conda-pack archive job; :mod:`.images` the image job
* :mod:`.purge`     deletion jobs; :mod:`.repair` lost follow-up work (links, tails, artifact jobs, purges)
* :mod:`.reconcile` re-enqueues lost jobs, queues interrupted builds again (or fails them)
* :mod:`.runner`    ``BuildWorker``: the flat RQ worker (no threads; runs the reconciler)
* :mod:`.zygote`    the warm build runner: the worker preloads, build children are forked from it;
  :mod:`.warmup` warms its SQL statement cache with a rolled-back throwaway build
* :mod:`.embedded`  private redis-server + worker processes for ``conda-store-server --standalone``
* ``python -m conda_store_jupyter.worker`` / ``conda-store-worker``: the worker command
"""

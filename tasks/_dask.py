"""Use the flow's Dask cluster from inside a task.

On a ``DaskTaskRunner`` a task runs in a Dask worker thread; dask/xarray work started there
must go to the cluster through a client, or it runs serially inside that one worker.
``distributed.worker_client`` gives the worker's own long-lived client (in an in-process
cluster, the flow's) and, while the task waits for its sub-graph, takes the task's thread out
of the worker's pool (``secede``/``rejoin``) so that waiting tasks never starve the cluster.

Not ``prefect_dask.get_dask_client``: it opens a temporary ``Client`` per call that makes
itself the process-wide default and closes it on exit; concurrent tasks in one process can
pick up a neighbour's client as theirs and find it closed (``'NoneType' object has no
attribute 'address'`` mid-ingest, seen on the 105-scene real-data run). Outside a Dask worker
(a plain call, tests) dask's default local scheduler is used.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def dask_client() -> Iterator[None]:
    if not _in_dask_worker():
        yield
        return
    from distributed import worker_client

    logging.getLogger("distributed").setLevel(logging.WARNING)
    with worker_client(separate_thread=True):
        yield

"""Use the flow's Dask cluster from inside a task.

On a ``DaskTaskRunner`` a task runs in a Dask worker thread; dask/xarray work started there
must go to the cluster through a client (``prefect_dask.get_dask_client``), or it runs
serially inside that one worker. While the task waits for its sub-graph it leaves the worker's
thread pool (``secede``) so that waiting tasks never starve the cluster of threads. Outside a
Dask worker (a plain call, tests) dask's default local scheduler is used.
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
    from distributed import rejoin, secede
    from prefect_dask import get_dask_client

    logging.getLogger("distributed").setLevel(logging.WARNING)
    secede()
    try:
        with get_dask_client():
            yield
    finally:
        rejoin()

"""The Dask task runner for sitewatch flows, chosen from the environment (no code change to
scale out):

* ``SITEWATCH_DASK_ADDRESS=tcp://host:8786``: use an existing Dask cluster;
* ``SITEWATCH_DASK_WORKERS=N``: start a local cluster of N worker processes (point every
  process at one Prefect server with ``PREFECT_API_URL`` first, or each worker starts its own
  temporary server);
* neither: a local in-process cluster (threads only), right for a laptop.
"""

from __future__ import annotations

import os

from prefect_dask import DaskTaskRunner


def make_task_runner() -> DaskTaskRunner:
    address = os.environ.get("SITEWATCH_DASK_ADDRESS")
    if address:
        return DaskTaskRunner(address=address)
    threads = int(os.environ.get("SITEWATCH_DASK_THREADS", "0")) or max(2, os.cpu_count() or 2)
    workers = int(os.environ.get("SITEWATCH_DASK_WORKERS", "0"))
    if workers > 0:
        return DaskTaskRunner(cluster_kwargs={
            "n_workers": workers, "processes": True, "threads_per_worker": max(1, threads // workers),
            "dashboard_address": None,
        })
    return DaskTaskRunner(cluster_kwargs={"n_workers": 1, "processes": False, "threads_per_worker": threads, "dashboard_address": None})

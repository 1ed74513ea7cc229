"""The Dask task runner for sitewatch flows, chosen from the environment when each flow run
starts (no code change to scale out, and no import-time decision):

* ``SITEWATCH_DASK_ADDRESS=tcp://host:8786``: use an existing Dask cluster (``sitewatch stack
  up``, the compose file's scheduler, a dask-kubernetes cluster); the kernels inside the tasks
  run on its workers (``tasks/_dask.py``);
* ``SITEWATCH_DASK_WORKERS=N``: start a local cluster of N worker processes (point every
  process at one Prefect server with ``PREFECT_API_URL`` first, or each worker starts its own
  temporary server);
* neither: a local in-process cluster (threads only), right for a laptop.

``SITEWATCH_DASK_THREADS``: threads (in total for the local clusters; default the core count, at
least 2).

Its local clusters of processes start their workers as :mod:`flows.dask_env` says.
"""

from __future__ import annotations

import os
from typing import Any

from prefect_dask import DaskTaskRunner

from .dask_env import local_cluster


def runner_settings(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``DaskTaskRunner`` keyword arguments for the environment (``os.environ`` by default)."""
    env = os.environ if environ is None else environ
    address = env.get("SITEWATCH_DASK_ADDRESS", "").strip()
    if address:
        if "://" not in address and ":" not in address:
            raise ValueError(f"SITEWATCH_DASK_ADDRESS got {address!r}; expected a scheduler address like tcp://host:8786")
        return {"address": address}
    threads = _int(env, "SITEWATCH_DASK_THREADS") or max(2, os.cpu_count() or 2)
    workers = _int(env, "SITEWATCH_DASK_WORKERS")
    if workers > 0:
        return {"cluster_class": local_cluster, "cluster_kwargs": {"n_workers": workers, "processes": True,
                                   "threads_per_worker": max(1, threads // workers), "dashboard_address": None}}
    return {"cluster_kwargs": {"n_workers": 1, "processes": False, "threads_per_worker": threads, "dashboard_address": None}}


def _int(env: Any, name: str) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return 0
    try:
        v = int(raw)
    except ValueError:
        raise ValueError(f"{name} got {raw!r}; expected a whole number") from None
    if v < 0:
        raise ValueError(f"{name} got {v}; expected >= 0")
    return v


class SitewatchTaskRunner(DaskTaskRunner):
    """A ``DaskTaskRunner`` that reads its cluster from the environment when a flow run starts
    (Prefect calls ``duplicate()`` then), so a process can import the flows first and be pointed
    at a cluster afterwards. Given explicit arguments, it behaves as ``DaskTaskRunner``."""

    def __init__(self, **kwargs: Any) -> None:
        self._from_env = not kwargs
        super().__init__(**(kwargs or runner_settings()))

    def duplicate(self) -> "SitewatchTaskRunner":
        if self._from_env:
            return type(self)()
        return super().duplicate()


def make_task_runner() -> DaskTaskRunner:
    return SitewatchTaskRunner()

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

Every Dask worker process sitewatch starts (a local cluster of processes here, the workers of
``sitewatch stack up``, the compose file's) starts with :data:`WORKER_MALLOC_ENV`: the analysis
frees and allocates arrays of hundreds of MB on every step, and memory a worker hands back to
the operating system can cost seconds per GB to fault in again (measured on a VM whose freed
pages go back to the host: 1.3-2.4 s for 400 MB, against 0.02 s for memory the process kept;
``benchmarks/results/scaleout-flow-malloc.md``). A cluster sitewatch did not start can use them
through :func:`worker_environ_variable`.
"""

from __future__ import annotations

import os
from typing import Any

import dask
from distributed import LocalCluster
from prefect_dask import DaskTaskRunner

#: glibc's malloc in each Dask worker: arrays of any size come from one heap (one arena: a task
#: thread's own arena would hand arrays over 64 MB to mmap again), and freed memory stays with the
#: process for the next step instead of going back to the operating system (dask's default trims
#: at 64 KiB). A worker's resident memory then stays near its peak between steps; its memory
#: limit still holds (the peak is unchanged).
WORKER_MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(4 * 2**30),
                     "MALLOC_TRIM_THRESHOLD_": str(16 * 2**30)}


def worker_spawn_environ() -> dict[str, str]:
    """The environment a Dask nanny sets before it starts its worker process: dask's own
    ``distributed.nanny.pre-spawn-environ`` (one thread for OpenMP and BLAS) with
    :data:`WORKER_MALLOC_ENV` (which must be there when the process starts: glibc reads it once)."""
    own = dask.config.get("distributed.nanny.pre-spawn-environ", None) or {}
    return {**{k: str(v) for k, v in own.items()}, **WORKER_MALLOC_ENV}


def worker_environ_variable() -> dict[str, str]:
    """:func:`worker_spawn_environ` as the variable that sets it for ``dask worker`` (in its environment)."""
    return {"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": repr(worker_spawn_environ())}


def local_cluster(**kwargs: Any) -> LocalCluster:
    """``distributed.LocalCluster(**kwargs)`` whose worker processes start with :func:`worker_spawn_environ`."""
    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_spawn_environ()}):
        return LocalCluster(**kwargs)


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

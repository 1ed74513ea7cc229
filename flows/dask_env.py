"""How sitewatch starts Dask worker processes (Prefect-free, so that ``flows.stack`` and the CLI
can use it before Prefect is imported; dask is imported only when needed, so that the
``sitewatch`` command reads :data:`WORKER_MALLOC_ENV` before it imports anything heavy).

Every Dask worker process sitewatch starts (a local cluster of processes for the flows, the workers of
``sitewatch stack up``, the compose file's) starts with :data:`WORKER_MALLOC_ENV`: the analysis
frees and allocates arrays of hundreds of MB on every step, and memory a worker hands back to
the operating system can cost seconds per GB to fault in again (measured on a VM whose freed
pages go back to the host: 1.3-2.4 s for 400 MB, against 0.02 s for memory the process kept;
``benchmarks/results/scaleout-flow-malloc.md``). A cluster sitewatch did not start can use them
through :func:`worker_environ_variable`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import LocalCluster

#: glibc's malloc in each Dask worker: arrays of any size come from one heap (one arena: a task
#: thread's own arena would hand arrays over 64 MB to mmap again), and freed memory stays with the
#: process for the next step instead of going back to the operating system (dask's default trims
#: at 64 KiB). A worker's resident memory then stays near its peak between steps, and the peak
#: itself is somewhat higher (4.3-4.4 GiB against 3.6-3.7 GiB for the 4096 px flow on 1 worker).
WORKER_MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(4 * 2**30),
                     "MALLOC_TRIM_THRESHOLD_": str(16 * 2**30)}


def worker_spawn_environ() -> dict[str, str]:
    """The environment a Dask nanny sets before it starts its worker process: dask's own
    ``distributed.nanny.pre-spawn-environ`` (one thread for OpenMP and BLAS) with
    :data:`WORKER_MALLOC_ENV` (which must be there when the process starts: glibc reads it once)."""
    import dask
    import distributed  # noqa: F401 (its config defaults, pre-spawn-environ among them)

    own = dask.config.get("distributed.nanny.pre-spawn-environ", None) or {}
    return {**{k: str(v) for k, v in own.items()}, **WORKER_MALLOC_ENV}


def worker_environ_variable() -> dict[str, str]:
    """:func:`worker_spawn_environ` as the variable that sets it for ``dask worker`` (in its environment)."""
    return {"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": repr(worker_spawn_environ())}


def malloc_env_at_start() -> dict[str, str | None]:
    """The :data:`WORKER_MALLOC_ENV` variables as this process was started with them (Linux:
    ``/proc/self/environ``, not ``os.environ``, which can change after the start, too late for
    glibc; elsewhere ``os.environ``). ``client.run(malloc_env_at_start)`` shows a cluster's workers'."""
    if os.path.exists("/proc/self/environ"):
        with open("/proc/self/environ", "rb") as f:
            start = dict(kv.split("=", 1) for kv in f.read().decode().split("\0") if "=" in kv)
    else:
        start = dict(os.environ)
    return {k: start.get(k) for k in WORKER_MALLOC_ENV}


def local_cluster(**kwargs: Any) -> "LocalCluster":
    """``distributed.LocalCluster(**kwargs)`` whose worker processes start with :func:`worker_spawn_environ`.

    A nanny takes a pre-spawn variable from this process's environment when it is there, before
    the config, and a nanny started earlier in this process (any other LocalCluster) leaves dask's
    ``MALLOC_TRIM_THRESHOLD_=65536`` there: so the variables are also set in this process's
    environment while the nannies start, and put back as they were afterwards."""
    import dask
    from distributed import LocalCluster

    spawn = worker_spawn_environ()
    before = {k: os.environ.get(k) for k in spawn}
    os.environ.update(spawn)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn}):
            return LocalCluster(**kwargs)
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

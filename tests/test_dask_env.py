"""How sitewatch starts Dask worker processes (flows/dask_env.py): dask's own settings plus the
malloc settings, in the worker process from its start, and as the variable for `dask worker`."""

from __future__ import annotations

import os

import dask
from distributed import Client

from flows.dask_env import (WORKER_MALLOC_ENV, local_cluster, malloc_env_at_start, worker_environ_variable,
                             worker_spawn_environ)


def test_worker_processes_start_with_the_malloc_settings_and_dasks_own(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1")  # restored after the test
    env = worker_spawn_environ()
    assert {k: env[k] for k in WORKER_MALLOC_ENV} == WORKER_MALLOC_ENV
    assert env["OMP_NUM_THREADS"] == "1"  # dask's own pre-spawn settings are kept
    assert env["MALLOC_TRIM_THRESHOLD_"] != "65536"  # ... but not its trim threshold
    # the variable for `dask worker` elsewhere (stack, compose file) reads back as the same settings
    parsed = dask.config.collect_env(worker_environ_variable())
    assert {k: str(v) for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", config=parsed).items()} == env
    before = dask.config.get("distributed.nanny.pre-spawn-environ")
    # what a nanny started earlier in this process leaves in its environment (dask's trim threshold)
    # must not win over the settings
    os.environ["MALLOC_TRIM_THRESHOLD_"] = "65536"
    with local_cluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        seen = client.run(malloc_env_at_start)
    assert list(seen.values()) == [WORKER_MALLOC_ENV]  # in the worker process from its start, where glibc reads it
    assert dask.config.get("distributed.nanny.pre-spawn-environ") == before  # this process's config is left as it was
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # ... and its environment

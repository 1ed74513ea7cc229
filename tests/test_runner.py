"""The task runner is chosen from the environment when a flow run starts; with
``SITEWATCH_DASK_ADDRESS`` the flow uses an existing cluster, and the kernels inside its tasks run
on that cluster's workers (both of them), not serially inside one."""

from __future__ import annotations

import collections
import os
import shutil
import sys

import pytest

from flows.dask_env import local_cluster
from flows.runner import SitewatchTaskRunner, runner_settings


def test_settings_from_the_environment():
    assert runner_settings({"SITEWATCH_DASK_ADDRESS": "tcp://10.0.0.5:8786"}) == {"address": "tcp://10.0.0.5:8786"}
    processes = runner_settings({"SITEWATCH_DASK_WORKERS": "2", "SITEWATCH_DASK_THREADS": "4"})
    local = processes["cluster_kwargs"]
    assert local["n_workers"] == 2 and local["processes"] and local["threads_per_worker"] == 2
    assert processes["cluster_class"] is local_cluster  # its workers start with sitewatch's malloc settings
    inproc = runner_settings({"SITEWATCH_DASK_THREADS": "3"})["cluster_kwargs"]
    assert inproc["processes"] is False and inproc["threads_per_worker"] == 3
    with pytest.raises(ValueError, match="SITEWATCH_DASK_WORKERS got 'two'"):
        runner_settings({"SITEWATCH_DASK_WORKERS": "two"})
    with pytest.raises(ValueError, match="SITEWATCH_DASK_ADDRESS got 'nowhere'"):
        runner_settings({"SITEWATCH_DASK_ADDRESS": "nowhere"})


def test_runner_reads_the_environment_when_a_run_starts(monkeypatch):
    monkeypatch.delenv("SITEWATCH_DASK_ADDRESS", raising=False)
    defined = SitewatchTaskRunner()  # what the @flow decorator holds, made at import time
    assert defined.address is None
    monkeypatch.setenv("SITEWATCH_DASK_ADDRESS", "tcp://127.0.0.1:9999")
    assert defined.duplicate().address == "tcp://127.0.0.1:9999"  # Prefect duplicates it per run
    assert SitewatchTaskRunner(address="tcp://h:1").duplicate().address == "tcp://h:1"


from distributed.diagnostics.plugin import SchedulerPlugin


class _Recorder(SchedulerPlugin):
    """Scheduler plugin: which worker computed each task (key prefix, tuple key = array chunk)."""

    name = "sitewatch-test-recorder"

    def __init__(self):
        super().__init__()
        self.done: list[tuple[str, object]] = []

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "memory" and kwargs.get("worker"):
            self.done.append((kwargs["worker"], key))


@pytest.mark.slow
def test_flow_on_an_existing_cluster_spreads_kernels_over_its_workers(tmp_path, monkeypatch, prefect_server):
    from distributed import LocalCluster

    from flows.monitor import monitor_site
    from sitewatch.demo import demo_site_config, write_synthetic_scenes
    from sitewatch.synthetic import SyntheticSpec, generate_series

    series = generate_series(SyntheticSpec(width=192, height=192, n_dates=12, seed=4, cloudy_fraction=0.3))
    write_synthetic_scenes(series, str(tmp_path / "scenes"))
    for sid in series.scene_ids[4:]:  # four dates are enough; the generator makes at least 12
        shutil.rmtree(tmp_path / "scenes" / sid)
    cfg = demo_site_config(series, str(tmp_path / "scenes"), str(tmp_path / "store"), name="scaled", chunk_size=96)

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)  # the worker processes talk to the session's server
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        rec = _Recorder()
        cluster.scheduler.add_plugin(rec, name=rec.name)
        monkeypatch.setenv("SITEWATCH_DASK_ADDRESS", cluster.scheduler_address)
        state = monitor_site(cfg, return_state=True)
        assert state.is_completed(), state.message
        workers = set(cluster.scheduler.workers)
        assert len(workers) == 2
    summary = state.result()
    assert len(summary["scenes_ingested"]) == 4

    chunks = collections.Counter(w for w, key in rec.done if isinstance(key, tuple))  # dask array chunks
    prefect_tasks = collections.Counter(w for w, key in rec.done if not isinstance(key, tuple))
    assert set(chunks) == workers, f"array chunks computed on {dict(chunks)}; expected both workers {workers}"
    assert min(chunks.values()) >= 0.2 * sum(chunks.values()), f"unbalanced: {dict(chunks)}"
    assert set(prefect_tasks) <= workers and sum(prefect_tasks.values()) > 0
    # the analysis too, not only the ingest: each date's analyse-scene task ran on a worker (from
    # where its arrays go to the whole cluster), not in the flow's process (it was once called
    # there and computed every array in that process)
    analysed = [w for w, key in rec.done if not isinstance(key, tuple) and str(key).startswith("analyse_scene-")]
    assert len(analysed) == 4 and set(analysed) <= workers, f"analyse-scene ran on {analysed}; expected 4 runs on the workers"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/environ")
def test_a_local_process_cluster_from_the_environment_starts_workers_with_the_malloc_settings(monkeypatch, prefect_server):
    from prefect import flow, task

    from flows.dask_env import WORKER_MALLOC_ENV, malloc_env_at_start

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)  # the worker process talks to the session's server
    monkeypatch.delenv("SITEWATCH_DASK_ADDRESS", raising=False)
    monkeypatch.setenv("SITEWATCH_DASK_WORKERS", "1")
    monkeypatch.setenv("SITEWATCH_DASK_THREADS", "1")
    # as in a flow's own process: prefect-dask reuses a default Dask client when the process has
    # one, and an earlier test in this pytest process may have left one (with its own workers)
    import distributed

    def no_default_client():
        raise ValueError("no default client")

    monkeypatch.setattr(distributed, "get_client", no_default_client)

    @task
    def environ_at_start() -> dict:
        return {"pid": os.getpid(), **malloc_env_at_start()}

    @flow(task_runner=SitewatchTaskRunner())
    def probe() -> dict:
        return environ_at_start.submit().result()

    seen = probe()
    assert seen.pop("pid") != os.getpid()  # ran in the local cluster's worker process ...
    assert seen == WORKER_MALLOC_ENV  # ... which started with the settings

"""Shared fixtures.

Prefect: one temporary Prefect server for the whole session (``prefect_test_harness``), so
flows do not each start their own (8-15 s each). Telemetry off. Real data in ../shared/data is
optional: tests that need it skip when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LOGGERS_DISTRIBUTED_LEVEL", "WARNING")
os.environ.setdefault("SITEWATCH_DASK_THREADS", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SITEWATCH_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def prefect_server():
    """A temporary Prefect server (real HTTP API on 127.0.0.1) for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared real data not found at {SHARED_DATA}")
    return SHARED_DATA


# ---------------------------------------------------------------- a small demo site, run once

SMALL_SPEC = dict(width=256, height=256, n_dates=14, seed=5)


@pytest.fixture(scope="session")
def small_series():
    from sitewatch.synthetic import SyntheticSpec, generate_series

    return generate_series(SyntheticSpec(**SMALL_SPEC))


class DemoRun:
    """The outcome of running the monitor flow once on the small synthetic site."""

    def __init__(self, workdir, cfg, series, summary, state):
        self.workdir = workdir
        self.cfg = cfg
        self.series = series
        self.summary = summary
        self.state = state


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, prefect_server, small_series) -> DemoRun:
    """Scenes of the small series written as COG + STAC, and the monitor flow run once on them
    (through the session's Prefect server and a real Dask cluster)."""
    from flows.monitor import monitor_site
    from sitewatch.demo import demo_site_config, write_synthetic_scenes

    workdir = tmp_path_factory.mktemp("demo")
    source, store = str(workdir / "scenes"), str(workdir / "store")
    write_synthetic_scenes(small_series, source)
    cfg = demo_site_config(small_series, source, store, name="testsite", chunk_size=128)
    state = monitor_site(cfg, return_state=True)
    summary = state.result(raise_on_failure=False)
    return DemoRun(workdir, cfg, small_series, summary, state)

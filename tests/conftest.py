"""Shared fixtures.

Prefect: one temporary Prefect server for the whole session (``prefect_test_harness``), so
flows do not each start their own (8-15 s each). Telemetry off. Real data in ../shared/data is
optional: tests that need it skip when it is absent.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LOGGERS_DISTRIBUTED_LEVEL", "WARNING")
os.environ.setdefault("SITEWATCH_DASK_THREADS", "2")

ROOT = Path(__file__).resolve().parents[1]
_STACK_DUMP_FILE = []


def pytest_configure(config):
    """bootstrap.py sends SIGUSR1 when the run exceeds its time budget: every test process then
    writes all its threads' stacks to the real stderr (a copy of fd 2 taken here, while pytest's
    output capture is not active)."""
    if hasattr(signal, "SIGUSR1") and not _STACK_DUMP_FILE:
        _STACK_DUMP_FILE.append(os.fdopen(os.dup(2), "w"))
        faulthandler.register(signal.SIGUSR1, file=_STACK_DUMP_FILE[0], all_threads=True)
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


# ---------------------------------------------------------------- a real S3 server (moto, own process)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def s3_server(monkeypatch):
    """A real S3 protocol server (moto's server mode) in its own process on 127.0.0.1 (GDAL's
    /vsis3/ deadlocks against an in-process moto). The environment points boto3, s3fs and GDAL
    at it; yields the endpoint URL."""
    venv_exe = os.path.join(os.path.dirname(sys.executable), "moto_server")  # the venv's moto, not a PATH shim's
    exe = venv_exe if os.path.exists(venv_exe) else shutil.which("moto_server")
    port = _free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for k in ("AWS_SESSION_TOKEN", "AWS_NO_SIGN_REQUEST", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        # nothing from other credentials or servers; set-then-delete makes monkeypatch record
        # the variable, so whatever the test's flows write there is undone afterwards too
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing-key", "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint, "AWS_S3_ENDPOINT": f"127.0.0.1:{port}", "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
    }.items():
        monkeypatch.setenv(k, v)
    import boto3

    deadline = time.time() + 30
    while True:
        try:
            boto3.client("s3", endpoint_url=endpoint).list_buckets()
            break
        except Exception:
            if time.time() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)
    import fsspec

    fsspec.config.conf.pop("s3", None)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture()
def sites_yaml(tmp_path):
    """Write a one-site config file for ``sitewatch run`` / ``serve`` whose grid is a synthetic
    series' grid: ``sites_yaml(name, series, source, store, chunk_size=128, ...)`` -> its path."""

    def write(name: str, series, source, store, **fields) -> Path:
        g = series.grid
        extra = "".join(f"    {k}: {v}\n" for k, v in fields.items())
        path = tmp_path / "sites.yaml"
        path.write_text(
            "version: 1\nsites:\n"
            f"  - name: {name}\n    crs: {g.crs}\n    bounds: [{', '.join(repr(v) for v in g.bounds)}]\n"
            f"    source: {source}\n    store: {store}\n{extra}"
        )
        return path

    return write

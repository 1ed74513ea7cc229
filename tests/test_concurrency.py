"""Two runs of one site at once (a scheduled run and an ad-hoc run from the UI): two real
``sitewatch run`` processes against the session's Prefect server, the second started while the
first is running. The per-site concurrency limit serialises them: every scene is in the cube
once, the second run ingests nothing and raises no alert, the cube and the feed are whole."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SITE = "concurrent"


def _env(api_url: str) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(PREFECT_API_URL=api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false", SITEWATCH_DASK_THREADS="2")
    return env


def _flow_runs(name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))


def test_two_concurrent_runs_of_one_site(tmp_path, prefect_server, small_series, sites_yaml):
    from sitewatch import open_site
    from sitewatch.demo import write_synthetic_scenes
    from sitewatch.io import cube as cube_io
    from tasks.concurrency import limit_name

    source, store = tmp_path / "scenes", tmp_path / "store"
    write_synthetic_scenes(small_series, str(source))
    cfg = sites_yaml(SITE, small_series, source, store, chunk_size=128, min_alert_area_m2=400)

    def start(tag: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", "--config", str(cfg), "--summary", str(tmp_path / f"{tag}.json")],
            cwd=ROOT, env=_env(prefect_server), stdout=open(tmp_path / f"{tag}.log", "w"), stderr=subprocess.STDOUT,
        )

    first = start("first")
    # the second run starts once the first is running (as a UI run started during a scheduled one)
    deadline = time.time() + 300
    while not any(r.state and r.state.is_running() for r in _flow_runs(f"monitor-{SITE}")):
        if first.poll() is not None or time.time() > deadline:
            pytest.fail(f"first run never seen running: {(tmp_path / 'first.log').read_text()[-3000:]}")
        time.sleep(0.5)
    second = start("second")
    for p, tag in ((first, "first"), (second, "second")):
        rc = p.wait(timeout=900)
        assert rc == 0, (tag, (tmp_path / f"{tag}.log").read_text()[-4000:])

    runs = sorted(_flow_runs(f"monitor-{SITE}"), key=lambda r: r.start_time)
    assert len(runs) == 2 and all(r.state.is_completed() for r in runs)
    a, b = runs
    # the two runs really were alive at the same time: the second started before the first ended
    assert b.start_time < a.end_time, (a.start_time, a.end_time, b.start_time)

    summaries = [json.loads((tmp_path / f"{t}.json").read_text())[0] for t in ("first", "second")]
    ingested = [s["scenes_ingested"] for s in summaries]
    n = len(small_series)
    # one run did the work, the other waited for the site's slot and then found nothing new
    assert sorted(len(i) for i in ingested) == [0, n], ingested
    assert sorted(len(s["new_alert_ids"]) for s in summaries)[0] == 0
    # and it waited for the slot for a measurable time (the log names the limit and the wait)
    idle = ("first", "second")[[len(i) for i in ingested].index(0)]
    waits = [float(m) for m in re.findall(rf"run slot {limit_name(SITE)} acquired after ([0-9.]+) s", (tmp_path / f"{idle}.log").read_text())]
    assert waits and waits[0] > 1.0, waits

    cube_url = str(store / SITE / "cube.zarr")
    slots = [s for s in cube_io.slots(cube_url) if s.scene_id]
    ids = [s.scene_id for s in slots]
    assert len(ids) == len(set(ids)) == n  # no scene twice, no slot allocated twice
    assert all(s.ingested and s.analysed for s in slots)
    ds = open_site(cube_url)
    assert ds.sizes["time"] == n
    assert np.all(np.diff(ds.time.values) > np.timedelta64(0, "ns"))
    assert sorted(map(str, ds.scene_id.values)) == sorted(small_series.scene(i).scene_id for i in range(n))
    feed = json.loads((store / SITE / "alerts" / "alerts.geojson").read_text())
    alert_ids = [f["properties"]["id"] for f in feed["features"]]
    assert alert_ids and len(alert_ids) == len(set(alert_ids))

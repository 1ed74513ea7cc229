"""The ``sitewatch`` command: config errors (fast), the demo end to end and ``serve`` (slow,
real subprocesses against the session's Prefect server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _env(api_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["SITEWATCH_DASK_THREADS"] = "2"
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def test_run_with_bad_config_names_the_field(tmp_path, capsys):
    cfg = tmp_path / "sites.yaml"
    cfg.write_text("sites:\n  - name: base-1\n    bbox: [36.0, 35.4, 35.9, 35.5]\n    source: s\n    store: t\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "base-1" in err and "bbox" in err and str(cfg) in err


def test_run_with_missing_field_and_missing_file(tmp_path, capsys):
    cfg = tmp_path / "sites.yaml"
    cfg.write_text("sites:\n  - name: port\n    bbox: [35.8, 34.8, 35.9, 34.9]\n    store: t\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "port" in err and "source" in err
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "no such site config file" in capsys.readouterr().err


def test_shipped_example_config_is_valid():
    from sitewatch.config import load_sites

    sites = load_sites(ROOT / "infra" / "sites.example.yaml")
    assert [s.name for s in sites] == ["khmeimim", "tartus"]
    g = sites[0].to_site().grid
    assert g.crs == "EPSG:32636" and 300 < g.width < 1000


@pytest.mark.slow
def test_demo_command_end_to_end_and_rerun(tmp_path, prefect_server):
    work = tmp_path / "demo"
    cmd = [sys.executable, "-m", "flows.cli", "demo", "--workdir", str(work), "--size", "192", "--dates", "12", "--seed", "3"]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(prefect_server), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "scenes ingested: 12" in r.stdout and "alert feed:" in r.stdout
    assert "scene 12/12 ready" in r.stderr  # progress is shown while it works
    s = json.loads((work / "summary.json").read_text())
    for key in ("scenes_ingested", "alerts", "cube", "alert_feed"):
        assert key in s
    assert len(s["scenes_ingested"]) == 12 and Path(s["cube"]).is_dir() and Path(s["alert_feed"]).is_file()
    assert (work / "truth.json").is_file()
    r2 = subprocess.run(cmd, cwd=ROOT, env=_env(prefect_server), capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    s2 = json.loads((work / "summary.json").read_text())
    assert s2["scenes_ingested"] == [] and s2["new_alert_ids"] == [] and s2["alerts"] == []
    assert "no new scenes" in r2.stdout


@pytest.mark.slow
def test_serve_creates_scheduled_deployment_and_runs_ad_hoc(tmp_path, prefect_server, small_series, sites_yaml):
    """``sitewatch serve`` registers a cron deployment per site; an ad-hoc run of it (what the
    UI's 'Run' button does) executes in the serving process and writes the cube."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from sitewatch.demo import write_synthetic_scenes

    source = tmp_path / "scenes"
    write_synthetic_scenes(small_series, str(source))
    cfg = sites_yaml("served", small_series, source, tmp_path / "store", chunk_size=128)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--config", str(cfg), "--cron", "0 3 * * *"],
        cwd=ROOT, env=_env(prefect_server), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        name = "monitor-site/served-scheduled"
        deadline = time.time() + 180
        dep = None
        with get_client(sync_client=True) as client:
            while time.time() < deadline and dep is None:
                if proc.poll() is not None:
                    pytest.fail(f"serve exited early: {proc.stdout.read()[-3000:]}")
                try:
                    dep = client.read_deployment_by_name(name)
                except Exception:
                    time.sleep(1)
        assert dep is not None, "deployment never appeared"
        crons = [getattr(s.schedule, "cron", None) for s in dep.schedules]
        assert "0 3 * * *" in crons
        assert dep.parameters["site"]["name"] == "served"
        run = run_deployment(name, timeout=600)
        assert run.state.is_completed(), run.state
        assert (tmp_path / "store" / "served" / "cube.zarr" / "zarr.json").is_file()
        assert (tmp_path / "store" / "served" / "alerts" / "alerts.geojson").is_file()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

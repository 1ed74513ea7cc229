"""The local stack (``sitewatch stack up|status|down``, flows/stack.py): a real Prefect server,
Dask scheduler + worker processes and a moto S3 server; ``sitewatch run --stack`` runs a site's
flow against them; ``down`` leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flows import stack
from flows.dask_env import WORKER_MALLOC_ENV

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "AWS_", "SITEWATCH_DASK", "SITEWATCH_STACK"))}
    base["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=base | (env or {}),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("kw, msg", [
    ({"workers": 0}, "workers got 0"), ({"threads_per_worker": True}, "threads_per_worker got True"),
    ({"prefect_port": 80}, "prefect_port got 80"), ({"buckets": ("ab",)}, "at least 3 characters"),
])
def test_stack_spec_is_validated(kw, msg):
    with pytest.raises(ValueError, match=msg):
        stack.StackSpec(**kw)


def test_stack_commands_without_a_stack(tmp_path):
    r = _cli("stack", "status", "--dir", str(tmp_path / "none"))
    assert r.returncode == 1 and "no stack state" in r.stderr
    r = _cli("stack", "down", "--dir", str(tmp_path / "none"))
    assert r.returncode == 1 and "no stack state" in r.stderr
    r = _cli("stack", "up", "--workers", "0", "--dir", str(tmp_path / "s"))
    assert r.returncode == 2 and "workers got 0" in r.stderr
    # a run pointed at a stack that does not run is a usage error, named
    cfg = tmp_path / "sites.yaml"
    cfg.write_text("sites: []\n")
    r = _cli("run", "--stack", str(tmp_path / "none"), "--config", str(cfg))
    assert r.returncode == 2 and "no running stack" in r.stderr


def test_state_file_with_a_reused_pid_is_left_alone(tmp_path):
    """``down`` never signals a pid that no longer runs the recorded command."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (tmp_path / "state.json").write_text(json.dumps({"services": {
            "s3": {"pid": other.pid, "cmd": [sys.executable, "/nonexistent/moto_server", "-p", "1"], "log": ""}}}))
        got = stack.down(tmp_path, timeout=1)
        assert got["s3"].startswith("left alone") and other.poll() is None
    finally:
        other.kill()
        other.wait()
    assert stack.down(tmp_path, timeout=1) == {"s3": "not running"}


def _post(url: str, body: dict) -> list[dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_stack_up_run_a_site_on_it_and_down(tmp_path, monkeypatch, sites_yaml):
    import boto3
    import fsspec

    from sitewatch.demo import write_synthetic_scenes
    from sitewatch.synthetic import SyntheticSpec, generate_series

    folder = tmp_path / "stack"
    t0 = time.monotonic()
    r = _cli("stack", "up", "--dir", str(folder), "--workers", "2", "--timeout", "150")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    t_up = time.monotonic() - t0
    state = json.loads((folder / "state.json").read_text())
    try:
        env = stack.read_env(folder)
        assert env["SITEWATCH_DASK_ADDRESS"] == state["services"]["dask-scheduler"]["url"]
        r = _cli("stack", "status", "--dir", str(folder))
        assert r.returncode == 0 and r.stdout.count("healthy") == 4, r.stdout + r.stderr
        # the Prefect UI is served and told where its API is (not the default 127.0.0.1:4200)
        ui = state["services"]["prefect"]["url"]
        with urllib.request.urlopen(ui + "/", timeout=30) as page:
            assert b"<html" in page.read(2000).lower()
        with urllib.request.urlopen(ui + "/ui-settings", timeout=30) as page:
            assert json.loads(page.read())["api_url"] == env["PREFECT_API_URL"]

        # scenes on the stack's S3 (three dates are enough to run the flow end to end)
        for k in ("AWS_SESSION_TOKEN", "AWS_NO_SIGN_REQUEST", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_PROFILE"):
            monkeypatch.setenv(k, "")
            monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        fsspec.config.conf.pop("s3", None)
        series = generate_series(SyntheticSpec(width=192, height=192, n_dates=12, seed=2, cloudy_fraction=0.0))
        write_synthetic_scenes(series, "s3://sitewatch-scenes/stacktest")
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        for sid in series.scene_ids[3:]:
            for obj in s3.list_objects_v2(Bucket="sitewatch-scenes", Prefix=f"stacktest/{sid}/").get("Contents", []):
                s3.delete_object(Bucket="sitewatch-scenes", Key=obj["Key"])
        cfg = sites_yaml("onstack", series, "s3://sitewatch-scenes/stacktest", "s3://sitewatch/out", chunk_size=96)

        t1 = time.monotonic()
        r = _cli("run", "--stack", str(folder), "--config", str(cfg), "--summary", str(tmp_path / "summary.json"))
        t_run = time.monotonic() - t1
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "using the local stack in" in r.stderr and "scenes ingested: 3" in r.stdout
        summary = json.loads((tmp_path / "summary.json").read_text())[0]
        assert summary["cube"] == "s3://sitewatch/out/onstack/cube.zarr"

        # the flow run lives on the stack's Prefect server ...
        api = env["PREFECT_API_URL"]
        runs = _post(f"{api}/flow_runs/filter", {"flow_runs": {"name": {"any_": ["monitor-onstack"]}}})
        assert len(runs) == 1 and runs[0]["state_type"] == "COMPLETED", runs
        # ... the cube on the stack's S3 ...
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="sitewatch", Prefix="out/onstack/").get("Contents", [])]
        assert "out/onstack/cube.zarr/zarr.json" in keys and "out/onstack/alerts/alerts.geojson" in keys
        # ... and the work ran on the stack's Dask workers (both worker processes computed tasks)
        from distributed import Client

        with Client(env["SITEWATCH_DASK_ADDRESS"], timeout=10) as c:
            done = c.run(lambda dask_worker: dask_worker.state.transition_counter)
            malloc = c.run(lambda: {k: os.environ.get(k) for k in WORKER_MALLOC_ENV})
        assert len(done) == 2 and all(n > 0 for n in done.values()), done
        assert list(malloc.values()) == [WORKER_MALLOC_ENV] * 2, malloc  # the workers started with sitewatch's malloc settings
    finally:
        r = _cli("stack", "down", "--dir", str(folder))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "still running" not in r.stdout and "left alone" not in r.stdout, r.stdout
    for name, svc in state["services"].items():
        assert not stack._group_alive(svc["pid"]), f"{name} (pid {svc['pid']}) still running after stack down"
    assert not (folder / "stack.env").exists()
    print(f"stack up {t_up:.1f} s, sitewatch run {t_run:.1f} s")

"""The same monitor flow with scenes and outputs on S3: a real S3 protocol server (moto's server
mode) in its own process on 127.0.0.1, a standard client (boto3) for the bucket, s3fs/fsspec
and GDAL's /vsis3/ for sitewatch's own reads and writes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def s3_server(monkeypatch):
    exe = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    port = _free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
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


def test_monitor_flow_with_scenes_and_cube_on_s3(s3_server, prefect_server, small_series):
    import boto3
    import s3fs

    from flows.monitor import monitor_site
    from sitewatch import open_site
    from sitewatch.demo import demo_site_config, write_synthetic_scenes
    from sitewatch.io import store

    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="sitewatch-test")
    source, out = "s3://sitewatch-test/scenes", "s3://sitewatch-test/sitewatch"
    write_synthetic_scenes(small_series, source)
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="sitewatch-test", Prefix="scenes/")["Contents"]]
    assert sum(k.endswith(".tif") for k in keys) == 6 * len(small_series)

    cfg = demo_site_config(small_series, source, out, name="s3site", chunk_size=128)
    state = monitor_site(cfg, return_state=True)
    assert state.is_completed(), state.message
    s = state.result()
    assert len(s["scenes_ingested"]) == len(small_series)
    assert s["cube"] == "s3://sitewatch-test/sitewatch/s3site/cube.zarr"
    assert store.exists(s["alert_feed"])
    ds = open_site(s["cube"])
    assert ds.rio.crs.to_epsg() == 32636 and ds.sizes["time"] == len(small_series)
    assert int(ds.nir.isel(time=2).values.sum()) == int(small_series.scene(2).bands[3].astype("int64").sum())
    # no credential in anything published
    feed = store.read_bytes(s["alert_feed"]).decode()
    assert "testing-secret" not in feed and "testing-key" not in feed
    # a rerun finds nothing new on S3 either
    again = monitor_site(cfg, return_state=True).result()
    assert again["scenes_ingested"] == [] and again["new_alert_ids"] == []

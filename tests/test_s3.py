"""The same monitor flow with scenes and outputs on S3: a real S3 protocol server (moto's server
mode) in its own process on 127.0.0.1, a standard client (boto3) for the bucket, s3fs/fsspec
and GDAL's /vsis3/ for sitewatch's own reads and writes."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


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

"""The same monitor flow with scenes and outputs on S3: a real S3 protocol server (moto's server
mode) in its own process on 127.0.0.1, a standard client (boto3) for the bucket, s3fs/fsspec
and GDAL's /vsis3/ for sitewatch's own reads and writes."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_monitor_flow_with_scenes_and_cube_on_s3(s3_server, prefect_server, small_series, tmp_path):
    import json
    import shutil

    import boto3
    import s3fs

    from flows.monitor import monitor_site
    from sitewatch import open_site
    from sitewatch.demo import demo_site_config, write_synthetic_scenes
    from sitewatch.io import store

    s3fs.S3FileSystem.clear_instance_cache()
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="sitewatch-test")
    # as users do: scenes (COG + STAC) made elsewhere, uploaded object by object with boto3
    local = tmp_path / "scenes"
    write_synthetic_scenes(small_series, str(local))
    n = 7  # the first 7 dates (the first events included): on moto every chunk is an HTTP request
    for sid in small_series.scene_ids[n:]:
        shutil.rmtree(local / sid)
    for p in sorted(local.rglob("*")):
        if p.is_file():
            s3.upload_file(str(p), "sitewatch-test", f"scenes/{p.relative_to(local).as_posix()}")
    source, out = "s3://sitewatch-test/scenes", "s3://sitewatch-test/sitewatch"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="sitewatch-test", Prefix="scenes/")["Contents"]]
    assert sum(k.endswith(".tif") for k in keys) == 6 * n

    cfg = demo_site_config(small_series, source, out, name="s3site", chunk_size=128)
    state = monitor_site(cfg, return_state=True)
    assert state.is_completed(), state.message
    s = state.result()
    assert len(s["scenes_ingested"]) == n
    assert s["cube"] == "s3://sitewatch-test/sitewatch/s3site/cube.zarr"
    assert store.exists(s["alert_feed"])
    ds = open_site(s["cube"])
    assert ds.rio.crs.to_epsg() == 32636 and ds.sizes["time"] == n
    assert int(ds.nir.isel(time=2).values.sum()) == int(small_series.scene(2).bands[3].astype("int64").sum())
    # no credential in anything published
    feed = store.read_bytes(s["alert_feed"]).decode()
    assert "testing-secret" not in feed and "testing-key" not in feed
    assert "testing-secret" not in json.dumps(s, default=str)
    assert s["scenes_quarantined"] == [] and not store.exists(s["quarantine"])  # nothing failed: no list written
    # a rerun finds nothing new on S3 either
    again = monitor_site(cfg, return_state=True).result()
    assert again["scenes_ingested"] == [] and again["new_alert_ids"] == []

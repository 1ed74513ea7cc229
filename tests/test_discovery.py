"""Tests for sitewatch.io.discovery (with sitewatch.io.layout and sitewatch.io.stac_api): scenes
found as STAC items in a folder, a static catalog, an ItemCollection, a STAC API (a real HTTP
server on 127.0.0.1: tests/stac_api_server.py) and a plain folder layout; locally and on a real
S3 protocol server (moto, its own process) with files uploaded by boto3."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box, mapping, shape

from sitewatch.grid import SiteGrid
from sitewatch.io import discovery as D
from sitewatch.io import layout as L
from sitewatch.io import scenes as S
from sitewatch.io import store

from stac_api_server import CONFORMS_TO, StacApiServer  # tests/ is on sys.path (rootdir conftest)

UTC = dt.timezone.utc
BANDS = ("blue", "red", "nir")
# a 64 x 80 px site at 10 m in UTM 36N (near Khmeimim)
SITE = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=80, height=64)
FAR = SiteGrid(crs="EPSG:32636", x0=500000.0, y0=4100000.0, resolution=10.0, width=80, height=64)


def _arrays(grid: SiteGrid, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {b: rng.integers(1, 10000, size=grid.shape, dtype=np.uint16) for b in BANDS}


def _when(day: int) -> dt.datetime:
    return dt.datetime(2026, 1, day, 8, 30, tzinfo=UTC)


def _site_footprint() -> dict:
    """The SITE grid's footprint in lon/lat, shrunk to lie strictly inside it."""
    from rasterio.warp import transform_bounds

    return mapping(box(*transform_bounds(SITE.crs, "EPSG:4326", *SITE.bounds)).buffer(-1e-4))


# ---------------------------------------------------------------- STAC items in a folder (moved from test_scenes)

def test_find_scenes_sorted_by_time_and_resolved(tmp_path):
    src = str(tmp_path / "scenes")
    # ids in reverse alphabetical order of time
    for sid, day in [("C", 1), ("A", 9), ("B", 4)]:
        S.write_scene(src, sid, _when(day), _arrays(SITE), SITE)
    found, problems = D.find_scenes(src)
    assert problems == []
    assert [s.scene_id for s in found] == ["C", "B", "A"]
    assert [s.datetime for s in found] == [_when(1), _when(4), _when(9)]
    ref = found[0]
    assert ref.datetime.tzinfo is not None
    assert ref.nodata == 0
    assert set(ref.assets) == set(BANDS)
    assert ref.assets["red"] == str(tmp_path / "scenes" / "C" / "red.tif")
    assert ref.item_href == str(tmp_path / "scenes" / "C" / "C.json")
    assert os.path.isfile(ref.assets["red"])
    assert D.discover(src).method == "stac-static"


def test_find_scenes_same_time_sorted_by_id(tmp_path):
    src = str(tmp_path / "scenes")
    for sid in ["Z", "M", "B"]:
        S.write_scene(src, sid, _when(3), _arrays(SITE), SITE)
    found, _ = D.find_scenes(src)
    assert [s.scene_id for s in found] == ["B", "M", "Z"]


def test_find_scenes_filters_by_footprint(tmp_path):
    src = str(tmp_path / "scenes")
    S.write_scene(src, "HERE", _when(1), _arrays(SITE), SITE)
    S.write_scene(src, "FAR", _when(2), _arrays(FAR), FAR)
    found_all, _ = D.find_scenes(src)
    assert [s.scene_id for s in found_all] == ["HERE", "FAR"]
    here_item = json.loads((tmp_path / "scenes" / "HERE" / "HERE.json").read_text())
    footprint = mapping(shape(here_item["geometry"]).buffer(-1e-4))  # strictly inside HERE
    found, problems = D.find_scenes(src, footprint)
    assert [s.scene_id for s in found] == ["HERE"] and problems == []
    nowhere = mapping(box(10.0, 10.0, 10.1, 10.1))
    assert D.find_scenes(src, nowhere)[0] == []
    d = D.discover(src, nowhere)
    assert (d.matched, d.outside) == (2, 2)


def test_find_scenes_reports_bad_items_without_failing(tmp_path):
    src = tmp_path / "scenes"
    S.write_scene(str(src), "GOOD", _when(1), _arrays(SITE), SITE)
    (src / "broken").mkdir()
    (src / "broken" / "broken.json").write_text("{not json")
    (src / "notstac").mkdir()
    (src / "notstac" / "notstac.json").write_text(json.dumps({"hello": "world"}))
    # a valid STAC item with a time range but no single acquisition time
    item = json.loads((src / "GOOD" / "GOOD.json").read_text())
    ranged = copy.deepcopy(item)
    ranged["id"] = "RANGED"
    ranged["properties"]["datetime"] = None
    ranged["properties"]["start_datetime"] = "2026-01-01T00:00:00Z"
    ranged["properties"]["end_datetime"] = "2026-01-02T00:00:00Z"
    (src / "ranged").mkdir()
    (src / "ranged" / "ranged.json").write_text(json.dumps(ranged))

    found, problems = D.find_scenes(str(src))
    assert [s.scene_id for s in found] == ["GOOD"]
    assert len(problems) == 3
    joined = "\n".join(problems)
    for name in ("broken.json", "notstac.json", "ranged.json"):
        assert name in joined
    assert any("ranged.json" in p and "datetime" in p for p in problems)
    # every problem starts with the URL of the object it is about (the flow's quarantine uses it)
    assert sorted(p.split(": ", 1)[0] for p in problems) == sorted(
        str(src / n / f"{n}.json") for n in ("broken", "notstac", "ranged"))


def test_find_scenes_empty_or_missing_source(tmp_path):
    assert D.find_scenes(str(tmp_path / "nothing-here")) == ([], [])


def test_duplicate_ids_are_found_once(tmp_path):
    src = tmp_path / "scenes"
    S.write_scene(str(src), "A", _when(1), _arrays(SITE), SITE)
    S.write_scene(str(src), "B", _when(2), _arrays(SITE), SITE)
    (src / "copy").mkdir()
    shutil.copy(src / "A" / "A.json", src / "copy" / "A.json")  # the same item twice
    found, problems = D.find_scenes(str(src))
    assert [s.scene_id for s in found] == ["A", "B"] and problems == []
    assert found[0].item_href == str(src / "A" / "A.json")  # the first in listing order wins


# ---------------------------------------------------------------- SceneRef from STAC items

def test_scene_ref_asset_meta_cloud_cover_and_collection(tmp_path):
    url = S.write_scene(str(tmp_path), "A", _when(1), _arrays(SITE), SITE, properties={"eo:cloud_cover": 12.5},
                        common_names={"nir": "nir08"})
    item = json.loads(Path(url).read_text())
    item["collection"] = "my-collection"
    ref = D.scene_ref_from_item(item, url)
    assert ref.cloud_cover == 12.5 and ref.collection == "my-collection"
    assert ref.asset_meta["nir"] == {"scale": pytest.approx(1e-4), "offset": 0.0, "nodata": 0, "data_type": "uint16",
                                     "common_name": "nir08", "band_name": "nir"}
    del item["collection"], item["properties"]["eo:cloud_cover"]
    ref = D.scene_ref_from_item(item, url, collection="from-parent")
    assert ref.cloud_cover is None and ref.collection == "from-parent"


def _item(assets: dict, **props) -> dict:
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": "S2B_36SYC_20240105_0_L2A",
        "geometry": mapping(box(35.9, 35.3, 36.0, 35.4)), "bbox": [35.9, 35.3, 36.0, 35.4],
        "properties": {"datetime": "2024-01-05T08:35:12.123000Z", **props}, "links": [], "assets": assets,
    }


COG = "image/tiff; application=geotiff; profile=cloud-optimized"


def test_data_assets_earth_search_style_keys_kept_as_named():
    base = "https://example.test/sentinel-cogs/36/S/YC/2024/1/S2B_36SYC_20240105_0_L2A"
    rb = lambda nodata: [{"nodata": nodata, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}]  # noqa: E731
    assets = {
        "blue": {"href": f"{base}/B02.tif", "type": COG, "roles": ["data", "reflectance"], "raster:bands": rb(0),
                 "eo:bands": [{"name": "B02", "common_name": "blue", "center_wavelength": 0.49}]},
        "nir08": {"href": f"{base}/B8A.tif", "type": COG, "roles": ["data", "reflectance"], "raster:bands": rb(0)},
        "scl": {"href": f"{base}/SCL.tif", "type": COG, "roles": ["data"],
                "raster:bands": [{"nodata": 0, "data_type": "uint8"}]},
        "visual": {"href": f"{base}/TCI.tif", "type": COG, "roles": ["visual"]},
        "thumbnail": {"href": f"{base}/thumbnail.jpg", "type": "image/jpeg", "roles": ["thumbnail"]},
        "granule_metadata": {"href": f"{base}/granule_metadata.xml", "type": "application/xml", "roles": ["metadata"]},
        "tileinfo_metadata": {"href": f"{base}/tileinfo_metadata.json", "type": "application/json", "roles": ["metadata"]},
        "blue-jp2": {"href": "s3://sentinel-s2-l2a/tiles/B02.jp2", "type": "image/jp2", "roles": ["data", "reflectance"]},
    }
    ref = D.scene_ref_from_item(_item(assets, **{"eo:cloud_cover": 3.2, "s2:mgrs_tile": "36SYC"}), f"{base}/item.json")
    assert sorted(ref.assets) == ["blue", "blue-jp2", "nir08", "scl"]
    assert ref.assets["blue"] == f"{base}/B02.tif"
    assert ref.asset_meta["blue"] == {"scale": 0.0001, "offset": -0.1, "nodata": 0, "data_type": "uint16",
                                      "common_name": "blue", "band_name": "B02", "center_wavelength": 0.49}
    assert ref.asset_meta["scl"] == {"nodata": 0, "data_type": "uint8"}
    assert ref.datetime == dt.datetime(2024, 1, 5, 8, 35, 12, 123000, tzinfo=UTC)
    assert ref.cloud_cover == 3.2


def test_data_assets_planetary_computer_and_landsat_qa_roles():
    assets = {
        "B02": {"href": "https://pc.test/T36SYC_B02_10m.tif", "type": COG, "roles": ["data"]},
        "B8A": {"href": "https://pc.test/T36SYC_B8A_20m.tif", "type": COG, "roles": ["data"]},
        "SCL": {"href": "https://pc.test/T36SYC_SCL_20m.tif", "type": COG, "roles": ["data"]},
        "rendered_preview": {"href": "https://pc.test/preview.png", "type": "image/png", "roles": ["overview"]},
        "safe-manifest": {"href": "https://pc.test/manifest.safe", "type": "application/xml", "roles": ["metadata"]},
        # Landsat C2 L2 QA band as providers publish it: mask roles, no "data"
        "qa_pixel": {"href": "https://pc.test/LC09_QA_PIXEL.TIF", "type": COG,
                     "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
                     "raster:bands": [{"nodata": 1, "data_type": "uint16", "unit": "bit index"}]},
        # no roles: kept if it is a GeoTIFF, dropped otherwise
        "SR_B4": {"href": "./LC09_SR_B4.TIF", "type": COG},
        "ANG": {"href": "./LC09_ANG.txt", "type": "text/plain"},
        "MTL": {"href": "./LC09_MTL.json"},
    }
    ref = D.scene_ref_from_item(_item(assets), "s3://bucket/landsat/LC09/item.json")
    assert sorted(ref.assets) == ["B02", "B8A", "SCL", "SR_B4", "qa_pixel"]
    assert ref.assets["SR_B4"] == "s3://bucket/landsat/LC09/LC09_SR_B4.TIF"
    assert ref.asset_meta["qa_pixel"] == {"nodata": 1, "data_type": "uint16"}
    assert ref.nodata == 1


def test_asset_meta_stac_1_1_bands_and_item_level_eo_bands():
    assets = {
        "red": {"href": "./red.tif", "type": COG, "roles": ["data"], "data_type": "uint16", "nodata": 0,
                "bands": [{"name": "B04", "eo:common_name": "red", "raster:scale": 2.75e-05, "raster:offset": -0.2}]},
        "nir": {"href": "./nir.tif", "type": COG, "roles": ["data"], "eo:bands": [1]},
    }
    item = _item(assets, **{"eo:bands": [{"name": "B4", "common_name": "red"}, {"name": "B5", "common_name": "nir"}]})
    ref = D.scene_ref_from_item(item, "/data/x/item.json")
    assert ref.asset_meta["red"] == {"scale": 2.75e-05, "offset": -0.2, "nodata": 0, "data_type": "uint16",
                                     "common_name": "red", "band_name": "B04"}
    assert ref.asset_meta["nir"] == {"common_name": "nir", "band_name": "B5"}


def test_item_without_data_assets_or_not_an_item_is_an_error_naming_it():
    with pytest.raises(S.SceneError, match=r"'/x/i.json' has no data assets.*thumbnail"):
        D.scene_ref_from_item(_item({"thumbnail": {"href": "t.jpg", "type": "image/jpeg", "roles": ["thumbnail"]}}), "/x/i.json")
    with pytest.raises(S.SceneError, match=r"'/x/c.json' is not a STAC item: type got 'Collection'"):
        D.scene_ref_from_item({"type": "Collection", "id": "c"}, "/x/c.json")


@pytest.mark.parametrize("href,base,expected", [
    ("./a.tif", "/data/s/item.json", "/data/s/a.tif"),
    ("../b/a.tif", "/data/s/item.json", "/data/b/a.tif"),
    ("a.tif", "s3://bk/pre/s/item.json", "s3://bk/pre/s/a.tif"),
    ("../../x/a.tif", "s3://bk/pre/s/item.json", "s3://bk/x/a.tif"),
    ("./a.tif", "http://127.0.0.1:9/api/collections/c/items/i", "http://127.0.0.1:9/api/collections/c/items/a.tif"),
    ("s3://other/a.tif", "/data/s/item.json", "s3://other/a.tif"),
    ("/abs/a.tif", "s3://bk/item.json", "/abs/a.tif"),
])
def test_resolve_href(href, base, expected):
    assert D.resolve_href(href, base) == expected


# ---------------------------------------------------------------- static catalog and ItemCollection

def _catalog(root: Path, item_ids: dict[str, int], bad_link: bool = False) -> Path:
    """root/catalog.json -> root/coll/collection.json -> ../items/<id>/<id>.json (relative links)."""
    for sid, day in item_ids.items():
        S.write_scene(str(root / "items"), sid, _when(day), _arrays(SITE), SITE)
    (root / "coll").mkdir(parents=True, exist_ok=True)
    coll = {
        "type": "Collection", "stac_version": "1.0.0", "id": "sentinel-2-l2a", "description": "d", "license": "CC-BY-4.0",
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
        "links": [{"rel": "root", "href": "../catalog.json"}, {"rel": "parent", "href": "../catalog.json"}]
        + [{"rel": "item", "href": f"../items/{sid}/{sid}.json", "type": "application/geo+json"} for sid in item_ids]
        + ([{"rel": "item", "href": "../items/MISSING/MISSING.json"}] if bad_link else []),
    }
    (root / "coll" / "collection.json").write_text(json.dumps(coll))
    cat = {"type": "Catalog", "stac_version": "1.0.0", "id": "root", "description": "d",
           "links": [{"rel": "root", "href": "./catalog.json"}, {"rel": "self", "href": str(root / "catalog.json")},
                     {"rel": "child", "href": "./coll/collection.json"},
                     {"rel": "child", "href": "./catalog.json"}]}  # a cycle must not loop
    (root / "catalog.json").write_text(json.dumps(cat))
    return root / "catalog.json"


def test_static_catalog_walked_with_relative_hrefs(tmp_path):
    cat = _catalog(tmp_path / "stac", {"X": 3, "Y": 1}, bad_link=True)
    d = D.discover(str(cat))
    assert d.method == "stac-static"
    assert [s.scene_id for s in d.scenes] == ["Y", "X"]
    ref = d.scenes[1]
    assert ref.collection == "sentinel-2-l2a"  # from the parent collection
    assert ref.item_href == str(tmp_path / "stac" / "items" / "X" / "X.json")
    assert ref.assets["red"] == str(tmp_path / "stac" / "items" / "X" / "red.tif") and os.path.isfile(ref.assets["red"])
    assert len(d.problems) == 1 and d.problems[0].startswith(str(tmp_path / "stac" / "items" / "MISSING" / "MISSING.json") + ": ")
    # the same folder as a folder of STAC JSON: catalogs and collections skipped, items found
    d2 = D.discover(str(tmp_path / "stac"))
    assert d2.method == "stac-static" and [s.scene_id for s in d2.scenes] == ["Y", "X"] and d2.problems == ()
    # collections filter on static STAC: items naming another collection are dropped
    d3 = D.discover(str(cat), collections=["landsat-c2-l2"])
    assert d3.scenes == () and d3.other_collection == 2


def test_item_collection_file(tmp_path):
    src = tmp_path / "scenes"
    feats = []
    for sid, day in [("B", 2), ("A", 1)]:
        url = S.write_scene(str(src), sid, _when(day), _arrays(SITE), SITE, properties={"eo:cloud_cover": 10.0 * day})
        feat = json.loads(Path(url).read_text())
        for a in feat["assets"].values():
            a["href"] = f"./{sid}/{a['href'][2:]}"  # relative to the ItemCollection file
        feats.append(feat)
    bad = copy.deepcopy(feats[0])
    bad["id"] = "NODATE"
    bad["properties"]["datetime"] = None
    feats.append(bad)
    (src / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    found, problems = D.find_scenes(str(src / "items.json"), max_cloud=15)
    assert [s.scene_id for s in found] == ["A"]  # B has 20 % cloud
    assert found[0].assets["blue"] == str(src / "A" / "blue.tif") and os.path.isfile(found[0].assets["blue"])
    assert problems == [f"{src / 'items.json'}#NODATE: STAC item '{src / 'items.json'}#NODATE' has no datetime; "
                        "expected an acquisition time"]


def test_missing_catalog_file_is_a_problem_naming_it(tmp_path):
    found, problems = D.find_scenes(str(tmp_path / "catalog.json"))
    assert found == [] and len(problems) == 1 and problems[0].startswith(f"{tmp_path / 'catalog.json'}: ")
    assert "No such file" in problems[0]


# ---------------------------------------------------------------- filters and arguments

def test_max_cloud_time_range_and_exclude(tmp_path):
    src = str(tmp_path / "scenes")
    S.write_scene(src, "CLEAR", _when(1), _arrays(SITE), SITE, properties={"eo:cloud_cover": 5.0})
    S.write_scene(src, "CLOUDY", _when(2), _arrays(SITE), SITE, properties={"eo:cloud_cover": 80.0})
    S.write_scene(src, "UNKNOWN", _when(3), _arrays(SITE), SITE)  # no eo:cloud_cover: passes
    S.write_scene(src, "LATE", _when(20), _arrays(SITE), SITE, properties={"eo:cloud_cover": 0.0})
    ids = lambda d: [s.scene_id for s in d.scenes]  # noqa: E731
    d = D.discover(src, max_cloud=30)
    assert ids(d) == ["CLEAR", "UNKNOWN", "LATE"] and d.cloudy == 1
    assert ids(D.discover(src, max_cloud=80)) == ["CLEAR", "CLOUDY", "UNKNOWN", "LATE"]
    d = D.discover(src, start="2026-01-02", end=_when(3))
    assert ids(d) == ["CLOUDY", "UNKNOWN"] and d.out_of_time == 2
    assert ids(D.discover(src, start=dt.datetime(2026, 1, 3, 8, 30))) == ["UNKNOWN", "LATE"]  # naive: UTC
    d = D.discover(src, exclude_ids={"CLEAR", "LATE"})
    assert ids(d) == ["CLOUDY", "UNKNOWN"] and (d.matched, d.excluded) == (4, 2)


@pytest.mark.parametrize("kw,match", [
    (dict(method="ftp"), "discovery method got 'ftp'"),
    (dict(max_cloud=101), "max_cloud got 101"),
    (dict(start="2026-02-01", end="2026-01-01"), "after end"),
    (dict(start="yesterday"), "start got 'yesterday'"),
    (dict(footprint={"type": "Polygon"}), "footprint got"),
])
def test_bad_arguments_raise_naming_the_argument(tmp_path, kw, match):
    footprint = kw.pop("footprint", None)
    with pytest.raises(ValueError, match=match):
        D.find_scenes(str(tmp_path), footprint, **kw)


# ---------------------------------------------------------------- plain folder layout

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

    d = D.discover(str(src), _site_footprint())
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


# ---------------------------------------------------------------- STAC API (a real HTTP server on 127.0.0.1)

def _api_items(root: Path, specs: list[tuple[str, int, SiteGrid, float | None, str]], asset_root: str | None = None) -> list[dict]:
    """Write scenes and return their items as a STAC API serves them: absolute asset hrefs,
    collection, eo:cloud_cover."""
    items = []
    for sid, day, grid, cloud, coll in specs:
        url = S.write_scene(str(root), sid, _when(day), _arrays(grid), grid,
                            properties={} if cloud is None else {"eo:cloud_cover": cloud})
        item = json.loads(Path(url).read_text())
        for k, a in item["assets"].items():
            a["href"] = f"{asset_root or root}/{sid}/{k}.tif"
        item["collection"] = coll
        items.append(item)
    return items


@pytest.fixture(scope="module")
def api_items(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-scenes")
    specs = [(f"S{d:02d}", d, SITE, float(d * 5), "s2") for d in range(1, 8)]  # cloud 5 ... 35 %
    specs += [("FAR", 4, FAR, 0.0, "s2"), ("NOCLOUD", 8, SITE, None, "s2"), ("L8", 5, SITE, 1.0, "landsat")]
    return _api_items(root, specs)


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv("SITEWATCH_RETRIES", "2")
    monkeypatch.setenv("SITEWATCH_RETRY_DELAY", "0.05")


def _self_links(items: list[dict], url: str) -> list[dict]:
    out = copy.deepcopy(items)
    for it in out:
        it["links"] = [{"rel": "self", "href": f"{url}/collections/{it['collection']}/items/{it['id']}"}]
    return out


def test_stac_api_search_intersects_collections_and_paging(api_items):
    with StacApiServer(api_items) as api:
        d = D.discover(api.url, _site_footprint(), collections=["s2"], page_size=3)
        assert d.method == "stac-api" and d.problems == ()
        assert [s.scene_id for s in d.scenes] == ["S01", "S02", "S03", "S04", "S05", "S06", "S07", "NOCLOUD"]
        reqs = api.search_requests()
        assert len(reqs) == 3  # 8 matches at 3 per page
        method, _, body = reqs[0]
        assert method == "POST" and body["collections"] == ["s2"] and body["limit"] == 3
        assert shape(body["intersects"]).equals(shape(_site_footprint()))
        assert [r[2].get("token") for r in reqs] == [None, 3, 6]
        ref = d.scenes[0]
        assert ref.collection == "s2" and ref.cloud_cover == 5.0 and os.path.isfile(ref.assets["red"])
        assert ref.asset_meta["red"]["nodata"] == 0
        assert ref.item_href == f"{api.url}/collections/s2/items/S01"  # no self link: built from collection and id
        # without a footprint or collections: everything, FAR and L8 included
        assert len(D.find_scenes(api.url, method="stac-api")[0]) == 10


def test_stac_api_get_only_server_pages_through_get_links(api_items):
    with StacApiServer(api_items, methods=("GET",)) as api:
        found, problems = D.find_scenes(api.url, _site_footprint(), collections=("s2",), start="2026-01-03")
        assert problems == []
        assert [s.scene_id for s in found] == ["S03", "S04", "S05", "S06", "S07", "NOCLOUD"]
        d = D.discover(api.url, _site_footprint(), collections=("s2",), start="2026-01-03", page_size=4)
        assert len(d.scenes) == 6 and {r[0] for r in api.search_requests()} == {"GET"}
        assert len(api.search_requests()) == 1 + 2


def test_stac_api_datetime_ranges(api_items):
    with StacApiServer(api_items) as api:
        ids = lambda **kw: [s.scene_id for s in D.find_scenes(api.url, collections=["s2"], **kw)[0]]  # noqa: E731
        assert ids(start=_when(6)) == ["S06", "S07", "NOCLOUD"]
        assert ids(end=_when(2)) == ["S01", "S02"]
        assert ids(start=_when(3), end=_when(4)) == ["S03", "FAR", "S04"]
        sent = [r[2]["datetime"] for r in api.search_requests()]
        assert sent[0].endswith("/..") and sent[1].startswith("../") and ".." not in sent[2]


def test_stac_api_max_cloud_through_query_extension(api_items):
    with StacApiServer(api_items) as api:
        found, problems = D.find_scenes(api.url, _site_footprint(), collections=["s2"], max_cloud=20)
        assert problems == []
        assert [s.scene_id for s in found] == ["S01", "S02", "S03", "S04"]  # NOCLOUD: the server drops it
        assert api.search_requests()[0][2]["query"] == {"eo:cloud_cover": {"lte": 20}}
    # a server without the query extension: sitewatch filters, and scenes without cloud cover pass
    plain = [c for c in CONFORMS_TO if not c.endswith("#query")]
    with StacApiServer(api_items, conforms_to=plain) as api:
        found, _ = D.find_scenes(api.url, _site_footprint(), collections=["s2"], max_cloud=20)
        assert [s.scene_id for s in found] == ["S01", "S02", "S03", "S04", "NOCLOUD"]
        assert "query" not in api.search_requests()[0][2]


def test_stac_api_bbox_on_the_test_server(api_items):
    """The test server's bbox filter (sitewatch sends intersects; other clients send bbox)."""
    from pystac_client import Client

    with StacApiServer(api_items) as api:
        west, south, east, north = shape(_site_footprint()).bounds
        got = sorted(i.id for i in Client.open(api.url).search(bbox=[west, south, east, north], method="GET").items())
        assert got == sorted(i["id"] for i in api_items if i["id"] != "FAR")


def test_stac_api_transient_500_is_retried(api_items, fast_retries):
    with StacApiServer(api_items) as api:
        api.fail_with(503, times=2)
        found, problems = D.find_scenes(api.url, collections=["landsat"])
        assert problems == [] and [s.scene_id for s in found] == ["L8"]
        assert len(api.search_requests()) == 3  # two 503s, then the answer


def test_stac_api_lasting_500_is_a_problem_naming_the_url(api_items, fast_retries):
    with StacApiServer(api_items) as api:
        api.fail_with(500, times=10, from_token=4)  # page 2 onwards keeps failing
        d = D.discover(api.url, collections=["s2"], page_size=4)
        assert [s.scene_id for s in d.scenes] == ["S01", "S02", "S03", "S04"]  # page 1 kept
        assert len(d.problems) == 1
        p = d.problems[0]
        assert p.startswith(f"{api.url}/search: STAC API search failed on page 2 (HTTP 500)")
        assert "injected HTTP 500" in p
        assert len(api.search_requests()) == 1 + 3  # page 1, then page 2 tried 1 + 2 retries


def test_stac_api_bad_items_are_problems_naming_them(api_items):
    nodate = copy.deepcopy(api_items[0])
    nodate["id"], nodate["properties"]["datetime"] = "NODATE", None
    noassets = copy.deepcopy(api_items[1])
    noassets["id"], noassets["assets"] = "NOASSETS", {}
    items = _self_links(api_items[:2] + [nodate, noassets], "http://placeholder")
    with StacApiServer(items + ["not an item"]) as api:
        found, problems = D.find_scenes(api.url)
        assert [s.scene_id for s in found] == ["S01", "S02"]
        assert found[0].item_href == "http://placeholder/collections/s2/items/S01"
        assert len(problems) == 3
        assert problems[0].startswith("http://placeholder/collections/s2/items/NODATE: ") and "no datetime" in problems[0]
        assert problems[1].startswith("http://placeholder/collections/s2/items/NOASSETS: ") and "no data assets" in problems[1]
        assert problems[2].startswith(f"{api.url}/search#page1[4]: ") and "type got 'str'" in problems[2]


def test_stac_api_gone_or_not_an_api(api_items, fast_retries):
    api = StacApiServer(api_items)
    url = api.start()
    api.stop()
    found, problems = D.find_scenes(url, method="stac-api")
    assert found == [] and len(problems) == 1
    assert problems[0].startswith(f"{url}: STAC API landing page cannot be read") and "onnection" in problems[0]
    with StacApiServer(api_items, conforms_to=["https://api.stacspec.org/v1.0.0/core"]) as api:
        found, problems = D.find_scenes(api.url, method="stac-api")
        assert found == [] and problems == [f"{api.url}: not a STAC API with item search; conformsTo lacks "
                                            "'https://api.stacspec.org/v1.0.*/item-search'"]


# ---------------------------------------------------------------- on a real S3 server (moto), uploaded with boto3

def _upload(client, bucket: str, folder: Path, prefix: str) -> list[str]:
    keys = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            key = f"{prefix}/{p.relative_to(folder).as_posix()}"
            client.upload_file(str(p), bucket, key)
            keys.append(key)
    return keys


def test_discovery_on_s3_static_catalog_item_collection_and_layout(s3_server, tmp_path):
    import boto3
    import rasterio

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="scenes-bucket")
    # STAC items (write_scene layout) with a catalog over them, and an ItemCollection
    cat = _catalog(tmp_path / "stac", {"X": 3, "Y": 1})
    (tmp_path / "stac" / "catalog.json").write_text(cat.read_text().replace(str(cat), "s3://scenes-bucket/stac/catalog.json"))
    items = [json.loads((tmp_path / "stac" / "items" / s / f"{s}.json").read_text()) for s in ("X", "Y")]
    for it in items:
        for a in it["assets"].values():
            a["href"] = f"./items/{it['id']}/{a['href'][2:]}"
    (tmp_path / "stac" / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    _upload(s3, "scenes-bucket", tmp_path / "stac", "stac")
    # a plain layout
    (tmp_path / "plain" / "LC08_L2SP_174036_20240103_20240115_02_T1").mkdir(parents=True)
    for k in ("SR_B4", "QA_PIXEL"):
        (tmp_path / "plain" / "LC08_L2SP_174036_20240103_20240115_02_T1" / f"LC08_L2SP_174036_20240103_20240115_02_T1_{k}.TIF"
         ).write_bytes(S.cog_bytes(np.ones(SITE.shape, np.uint16), SITE, nodata=0))
    _upload(s3, "scenes-bucket", tmp_path / "plain", "plain")

    d = D.discover("s3://scenes-bucket/stac/catalog.json")
    assert d.method == "stac-static" and d.problems == ()
    assert [s.scene_id for s in d.scenes] == ["Y", "X"] and d.scenes[0].collection == "sentinel-2-l2a"
    assert d.scenes[0].assets["red"] == "s3://scenes-bucket/stac/items/Y/red.tif"
    with rasterio.open(store.gdal_path(d.scenes[0].assets["red"])) as src:  # the href points at the uploaded COG
        assert src.crs.to_epsg() == 32636 and src.shape == SITE.shape

    d = D.discover("s3://scenes-bucket/stac", max_cloud=50)
    assert d.method == "stac-static" and [s.scene_id for s in d.scenes] == ["Y", "X"] and d.problems == ()
    assert d.scenes[1].item_href == "s3://scenes-bucket/stac/items/X/X.json"

    found, problems = D.find_scenes("s3://scenes-bucket/stac/items.json", _site_footprint())
    assert [s.scene_id for s in found] == ["Y", "X"] and problems == []
    assert found[1].assets["nir"] == "s3://scenes-bucket/stac/items/X/nir.tif"

    d = D.discover("s3://scenes-bucket/plain", _site_footprint())
    assert d.method == "layout" and d.problems == ()
    (ref,) = d.scenes
    assert ref.assets == {k: f"s3://scenes-bucket/plain/{ref.scene_id}/{ref.scene_id}_{k}.TIF" for k in ("SR_B4", "QA_PIXEL")}
    assert ref.nodata == 0 and ref.datetime == dt.datetime(2024, 1, 3, tzinfo=UTC)
    # the same through explicit storage options instead of the environment's endpoint
    found, _ = D.find_scenes("s3://scenes-bucket/stac", storage_options={"endpoint_url": s3_server})
    assert len(found) == 2

    # a missing bucket: a StoreError naming it
    with pytest.raises(store.StoreError, match="bucket 'no-such-bucket'"):
        D.find_scenes("s3://no-such-bucket/scenes")


def test_stac_api_items_pointing_to_s3(s3_server, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="api-assets")
    items = _api_items(tmp_path, [("A", 1, SITE, 3.0, "s2"), ("B", 2, SITE, 90.0, "s2")], asset_root="s3://api-assets/cogs")
    _upload(s3, "api-assets", tmp_path, "cogs")
    with StacApiServer(items) as api:
        found, problems = D.find_scenes(api.url, _site_footprint(), max_cloud=50)
    assert problems == [] and [s.scene_id for s in found] == ["A"]
    assert store.exists(found[0].assets["blue"])


# ---------------------------------------------------------------- the find-new-scenes task

@pytest.mark.slow
def test_find_new_scenes_task_uses_site_discovery_settings(prefect_server, tmp_path):
    from prefect import flow

    from sitewatch.config import SiteConfig
    from sitewatch.io import cube as cube_io
    from tasks.scenes import find_new_scenes

    bands = ("blue", "green", "red", "nir", "swir16")
    rng = np.random.default_rng(3)
    arrays = {b: rng.integers(1, 10000, size=SITE.shape, dtype=np.uint16) for b in bands}
    src = tmp_path / "scenes"
    S.write_scene(str(src), "CLEAR", _when(1), arrays, SITE, properties={"eo:cloud_cover": 5.0})
    S.write_scene(str(src), "CLOUDY", _when(2), arrays, SITE, properties={"eo:cloud_cover": 95.0})
    S.write_scene(str(src), "DONE", _when(3), arrays, SITE, properties={"eo:cloud_cover": 1.0})
    S.write_scene(str(src), "FAR", _when(4), _arrays(FAR), FAR)
    (src / "bad.json").write_text("{")
    cfg = SiteConfig(name="disc", bounds=SITE.bounds, crs=SITE.crs, resolution=10.0, source=str(src), bands=bands,
                     store=str(tmp_path / "out"), discovery="stac-static", max_cloud=50, chunk_size=64)
    # DONE is already committed to the cube
    site = cfg.to_site()
    (done_ref,) = [r for r in D.find_scenes(str(src))[0] if r.scene_id == "DONE"]
    cube_io.extend(site.cube_url, site.grid, bands, [("DONE", done_ref.datetime)], chunk=64)
    cube_io.write_scene_slice(site.cube_url, 0, S.read_scene(done_ref, site.grid, bands, chunks=64))
    assert [(s.scene_id, s.ingested) for s in cube_io.slots(site.cube_url)] == [("DONE", True)]

    @flow
    def run():
        return find_new_scenes(cfg)

    new, problems = run()
    assert [s.scene_id for s in new] == ["CLEAR"]  # not CLOUDY (95 %), DONE (in the cube), FAR (elsewhere)
    assert len(problems) == 1 and problems[0].startswith(f"{src / 'bad.json'}: ")

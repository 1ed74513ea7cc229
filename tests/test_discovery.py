"""Tests for sitewatch.io.discovery: scenes found as STAC items in a folder, a static catalog, an
ItemCollection, with filters; locally and on a real S3 protocol server (moto, its own process)
with files uploaded by boto3; and the find-new-scenes task. The plain folder layout and the STAC
API have their own modules (test_layout.py, test_stac_api.py); the scenes they share are in
discovery_sites.py."""

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

from sitewatch.io import discovery as D
from sitewatch.io import scenes as S
from sitewatch.io import store

from discovery_sites import BANDS, FAR, SITE, UTC, arrays, site_footprint, upload, when  # tests/ is on sys.path

# ---------------------------------------------------------------- STAC items in a folder (moved from test_scenes)

def test_find_scenes_sorted_by_time_and_resolved(tmp_path):
    src = str(tmp_path / "scenes")
    # ids in reverse alphabetical order of time
    for sid, day in [("C", 1), ("A", 9), ("B", 4)]:
        S.write_scene(src, sid, when(day), arrays(SITE), SITE)
    found, problems = D.find_scenes(src)
    assert problems == []
    assert [s.scene_id for s in found] == ["C", "B", "A"]
    assert [s.datetime for s in found] == [when(1), when(4), when(9)]
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
        S.write_scene(src, sid, when(3), arrays(SITE), SITE)
    found, _ = D.find_scenes(src)
    assert [s.scene_id for s in found] == ["B", "M", "Z"]


def test_find_scenes_filters_by_footprint(tmp_path):
    src = str(tmp_path / "scenes")
    S.write_scene(src, "HERE", when(1), arrays(SITE), SITE)
    S.write_scene(src, "FAR", when(2), arrays(FAR), FAR)
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
    S.write_scene(str(src), "GOOD", when(1), arrays(SITE), SITE)
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
    S.write_scene(str(src), "A", when(1), arrays(SITE), SITE)
    S.write_scene(str(src), "B", when(2), arrays(SITE), SITE)
    (src / "copy").mkdir()
    shutil.copy(src / "A" / "A.json", src / "copy" / "A.json")  # the same item twice
    found, problems = D.find_scenes(str(src))
    assert [s.scene_id for s in found] == ["A", "B"] and problems == []
    assert found[0].item_href == str(src / "A" / "A.json")  # the first in listing order wins


# ---------------------------------------------------------------- SceneRef from STAC items

def test_scene_ref_asset_meta_cloud_cover_and_collection(tmp_path):
    url = S.write_scene(str(tmp_path), "A", when(1), arrays(SITE), SITE, properties={"eo:cloud_cover": 12.5},
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
        S.write_scene(str(root / "items"), sid, when(day), arrays(SITE), SITE)
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
        url = S.write_scene(str(src), sid, when(day), arrays(SITE), SITE, properties={"eo:cloud_cover": 10.0 * day})
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
    S.write_scene(src, "CLEAR", when(1), arrays(SITE), SITE, properties={"eo:cloud_cover": 5.0})
    S.write_scene(src, "CLOUDY", when(2), arrays(SITE), SITE, properties={"eo:cloud_cover": 80.0})
    S.write_scene(src, "UNKNOWN", when(3), arrays(SITE), SITE)  # no eo:cloud_cover: passes
    S.write_scene(src, "LATE", when(20), arrays(SITE), SITE, properties={"eo:cloud_cover": 0.0})
    ids = lambda d: [s.scene_id for s in d.scenes]  # noqa: E731
    d = D.discover(src, max_cloud=30)
    assert ids(d) == ["CLEAR", "UNKNOWN", "LATE"] and d.cloudy == 1
    assert ids(D.discover(src, max_cloud=80)) == ["CLEAR", "CLOUDY", "UNKNOWN", "LATE"]
    d = D.discover(src, start="2026-01-02", end=when(3))
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


# ---------------------------------------------------------------- on a real S3 server (moto), uploaded with boto3

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
    upload(s3, "scenes-bucket", tmp_path / "stac", "stac")
    # a plain layout
    (tmp_path / "plain" / "LC08_L2SP_174036_20240103_20240115_02_T1").mkdir(parents=True)
    for k in ("SR_B4", "QA_PIXEL"):
        (tmp_path / "plain" / "LC08_L2SP_174036_20240103_20240115_02_T1" / f"LC08_L2SP_174036_20240103_20240115_02_T1_{k}.TIF"
         ).write_bytes(S.cog_bytes(np.ones(SITE.shape, np.uint16), SITE, nodata=0))
    upload(s3, "scenes-bucket", tmp_path / "plain", "plain")

    d = D.discover("s3://scenes-bucket/stac/catalog.json")
    assert d.method == "stac-static" and d.problems == ()
    assert [s.scene_id for s in d.scenes] == ["Y", "X"] and d.scenes[0].collection == "sentinel-2-l2a"
    assert d.scenes[0].assets["red"] == "s3://scenes-bucket/stac/items/Y/red.tif"
    with rasterio.open(store.gdal_path(d.scenes[0].assets["red"])) as src:  # the href points at the uploaded COG
        assert src.crs.to_epsg() == 32636 and src.shape == SITE.shape

    d = D.discover("s3://scenes-bucket/stac", max_cloud=50)
    assert d.method == "stac-static" and [s.scene_id for s in d.scenes] == ["Y", "X"] and d.problems == ()
    assert d.scenes[1].item_href == "s3://scenes-bucket/stac/items/X/X.json"

    found, problems = D.find_scenes("s3://scenes-bucket/stac/items.json", site_footprint())
    assert [s.scene_id for s in found] == ["Y", "X"] and problems == []
    assert found[1].assets["nir"] == "s3://scenes-bucket/stac/items/X/nir.tif"

    d = D.discover("s3://scenes-bucket/plain", site_footprint())
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


# ---------------------------------------------------------------- the find-new-scenes task

@pytest.mark.slow
def test_find_new_scenes_task_uses_site_discovery_settings(prefect_server, tmp_path):
    from prefect import flow

    from sitewatch.config import SiteConfig
    from sitewatch.io import cube as cube_io
    from tasks.scenes import find_new_scenes

    bands = ("blue", "green", "red", "nir", "swir16")
    rng = np.random.default_rng(3)
    data = {b: rng.integers(1, 10000, size=SITE.shape, dtype=np.uint16) for b in bands}
    src = tmp_path / "scenes"
    S.write_scene(str(src), "CLEAR", when(1), data, SITE, properties={"eo:cloud_cover": 5.0})
    S.write_scene(str(src), "CLOUDY", when(2), data, SITE, properties={"eo:cloud_cover": 95.0})
    S.write_scene(str(src), "DONE", when(3), data, SITE, properties={"eo:cloud_cover": 1.0})
    S.write_scene(str(src), "FAR", when(4), arrays(FAR), FAR)
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

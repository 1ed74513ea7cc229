"""Tests for sitewatch.sensors: band profiles (asset keys, scale/offset/nodata, QA bands) and
scenes imitating each product read onto a site grid through them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import dask
import numpy as np
import pytest
import rasterio

from sitewatch.grid import SiteGrid
from sitewatch.io import discovery as D
from sitewatch.io import scenes as S
from sitewatch.models import SceneRef
from sitewatch.sensors import PROFILES, BandSpec, SceneError, SensorProfile, get_profile

UTC = dt.timezone.utc
WHEN = dt.datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
# a 10 m site grid in UTM 33N, 60 x 60 px, aligned to 20 m and 60 m pixels
SITE = SiteGrid(crs="EPSG:32633", x0=400020.0, y0=5000040.0, resolution=10.0, width=60, height=60)


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _grid(res: float, width: int, height: int, x0: float = SITE.x0, y0: float = SITE.y0, crs: str = SITE.crs) -> SiteGrid:
    return SiteGrid(crs=crs, x0=x0, y0=y0, resolution=res, width=width, height=height)


def _item(folder: Path, scene_id: str, assets: dict[str, tuple[np.ndarray, SiteGrid, dict]], properties=None) -> SceneRef:
    """Write each asset as a COG and a STAC item naming them; the SceneRef as discovery makes it
    (``asset_meta`` from each asset's ``raster:bands``)."""
    folder.mkdir(parents=True, exist_ok=True)
    item_assets = {}
    for key, (arr, grid, raster) in assets.items():
        (folder / f"{key}.tif").write_bytes(S.cog_bytes(arr, grid, nodata=raster.get("nodata"), blocksize=128))
        a = {"href": f"./{key}.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}
        if raster:
            a["raster:bands"] = [raster]
        item_assets[key] = a
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": scene_id,
        "geometry": {"type": "Polygon", "coordinates": [[[14, 45], [15, 45], [15, 46], [14, 46], [14, 45]]]},
        "bbox": [14, 45, 15, 46], "properties": {"datetime": WHEN.isoformat().replace("+00:00", "Z"), **(properties or {})},
        "links": [], "assets": item_assets,
    }
    path = folder / f"{scene_id}.json"
    path.write_text(json.dumps(item))
    return D.scene_ref_from_item(item, str(path))


def _ramp_x(grid: SiteGrid, start: int, step: int) -> np.ndarray:
    return np.broadcast_to((start + step * np.arange(grid.width)).astype(np.uint16)[None, :], grid.shape).copy()


def _ramp_y(grid: SiteGrid, start: int, step: int) -> np.ndarray:
    return np.broadcast_to((start + step * np.arange(grid.height)).astype(np.uint16)[:, None], grid.shape).copy()


# ---------------------------------------------------------------- the profiles themselves

def test_profile_names_and_qa():
    assert set(PROFILES) == {"generic", "sentinel2-l1c", "sentinel2-l2a", "landsat-c2-l2", "landsat-c2-l2-tm-etm",
                             "landsat-tm-etm-fmask", "commercial-4band"}
    expect_qa = {"generic": None, "sentinel2-l1c": None, "sentinel2-l2a": ("scl", "scl"),
                 "landsat-c2-l2": ("qa_pixel", "qa_pixel"), "landsat-c2-l2-tm-etm": ("qa_pixel", "qa_pixel"),
                 "landsat-tm-etm-fmask": ("fmask", "fmask"), "commercial-4band": None}
    for name, p in PROFILES.items():
        assert p.name == name
        assert (None if p.qa_band is None else (p.qa_band, p.qa_kind)) == expect_qa[name]
        for b in p.default_bands:
            assert not p.band(b).qa
        if p.qa_band:
            assert p.band(p.qa_band).qa
    assert PROFILES["generic"].default_bands == ("blue", "green", "red", "nir", "swir16", "swir22")
    assert PROFILES["landsat-tm-etm-fmask"].default_bands == ("red", "nir", "swir16")
    # Landsat C2 L2: scale/offset, QA_PIXEL fill value 1
    c2 = PROFILES["landsat-c2-l2"]
    assert (c2.band("red").scale, c2.band("red").offset, c2.band("red").nodata) == (2.75e-5, -0.2, 0)
    assert c2.band("qa_pixel").nodata == 1
    # Landsat 4-7 band numbering
    tm = PROFILES["landsat-c2-l2-tm-etm"]
    assert "SR_B1" in tm.band("blue").aliases and "SR_B7" in tm.band("swir22").aliases and "SR_B4" in tm.band("nir").aliases
    # Sentinel-2: native resolutions, B10 only in L1C, SCL only in L2A
    l2a, l1c = PROFILES["sentinel2-l2a"], PROFILES["sentinel2-l1c"]
    assert [l2a.band(b).resolution for b in ("blue", "rededge1", "nir08", "coastal", "swir16")] == [10, 20, 20, 60, 20]
    assert "B10" in l1c.band("cirrus").aliases and "cirrus" not in l2a.band_names and "scl" not in l1c.band_names


def test_get_profile_unknown_names_the_known_ones():
    with pytest.raises(ValueError) as exc:
        get_profile("sentinel-3")
    assert "'sentinel-3'" in str(exc.value) and "sentinel2-l2a" in str(exc.value) and "landsat-c2-l2" in str(exc.value)
    p = get_profile("generic")
    assert get_profile(p) is p


def test_profile_validation():
    with pytest.raises(ValueError, match="aliases"):
        BandSpec("red", ())
    with pytest.raises(ValueError, match="default_bands"):
        SensorProfile("x", (BandSpec("red", ("r",)),), ("nir",))
    with pytest.raises(ValueError, match="qa_band"):
        SensorProfile("x", (BandSpec("red", ("r",)),), ("red",), qa_band="red", qa_kind="fmask")
    with pytest.raises(ValueError, match="one of"):
        PROFILES["generic"].band("scl")


def _ref(keys, meta=None, props=None) -> SceneRef:
    return SceneRef("S", WHEN, {k: f"/x/{k}.tif" for k in keys}, item_href="/x/S.json", properties=props or {},
                    asset_meta=meta or {})


def test_resolve_earth_search_and_planetary_computer_keys():
    l2a = PROFILES["sentinel2-l2a"]
    es = _ref(["blue", "green", "red", "nir", "nir08", "swir16", "swir22", "scl", "visual", "blue-jp2"])
    pc = _ref(["B02", "B03", "B04", "B08", "B8A", "B11", "B12", "SCL", "visual"])
    got_es = l2a.resolve(es, ["blue", "nir", "nir08", "swir16", "scl"])
    got_pc = l2a.resolve(pc, ["blue", "nir", "nir08", "swir16", "scl"])
    assert {b: k for b, (k, _) in got_es.items()} == {"blue": "blue", "nir": "nir", "nir08": "nir08", "swir16": "swir16", "scl": "scl"}
    assert {b: k for b, (k, _) in got_pc.items()} == {"blue": "B02", "nir": "B08", "nir08": "B8A", "swir16": "B11", "scl": "SCL"}
    assert got_pc["scl"][1].qa and not got_pc["blue"][1].qa
    # case-insensitive; Landsat C2 USGS vs Planetary Computer/Earth Search keys
    c2 = PROFILES["landsat-c2-l2"]
    usgs = c2.resolve(_ref(["SR_B2", "SR_B5", "QA_PIXEL"]), ["blue", "nir", "qa_pixel"])
    pc_ls = c2.resolve(_ref(["blue", "nir08", "qa_pixel"]), ["blue", "nir", "qa_pixel"])
    assert [k for k, _ in usgs.values()] == ["SR_B2", "SR_B5", "QA_PIXEL"]
    assert [k for k, _ in pc_ls.values()] == ["blue", "nir08", "qa_pixel"]
    assert [k for k, _ in PROFILES["commercial-4band"].resolve(_ref(["Band1", "BAND4"]), ["blue", "nir"]).values()] == ["Band1", "BAND4"]


def test_resolve_by_eo_common_name_when_keys_differ():
    ref = _ref(["b3", "other"], meta={"b3": {"common_name": "red"}, "other": {"common_name": "nir"}})
    got = PROFILES["generic"].resolve(ref, ["red", "nir"])
    assert got["red"][0] == "b3" and got["nir"][0] == "other"


def test_resolve_missing_band_names_scene_band_and_keys():
    with pytest.raises(SceneError) as exc:
        PROFILES["sentinel2-l2a"].resolve(_ref(["B02", "B03"]), ["blue", "swir16", "nir08"])
    msg = str(exc.value)
    assert "'S'" in msg and "'swir16'" in msg and "'nir08'" in msg and "'B11'" in msg and "'B8A'" in msg
    assert "['B02', 'B03']" in msg and "sentinel2-l2a" in msg
    assert isinstance(exc.value, ValueError) and SceneError is S.SceneError


def test_pixel_meta_item_wins_then_baseline_then_profile():
    l2a = PROFILES["sentinel2-l2a"]
    spec = l2a.band("red")
    old = _ref(["B04"], props={"s2:processing_baseline": "03.01"})
    new = _ref(["B04"], props={"s2:processing_baseline": "05.09"})
    stated = _ref(["B04"], meta={"B04": {"scale": 0.0001, "offset": 0.0, "nodata": 0}}, props={"s2:processing_baseline": "05.09"})
    assert l2a.pixel_meta(old, "B04", spec)["offset"] == 0.0
    assert l2a.pixel_meta(new, "B04", spec)["offset"] == -0.1
    assert l2a.pixel_meta(stated, "B04", spec)["offset"] == 0.0  # the item says its data has no offset
    assert l2a.pixel_meta(new, "B04", l2a.band("scl"))["offset"] == 0.0  # never for QA
    assert PROFILES["sentinel2-l1c"].pixel_meta(new, "B04", spec)["offset"] == -0.1
    # Earth Search: raster:bands always states -0.1; earthsearch:boa_offset_applied says the data has it already
    es = {"red": {"scale": 0.0001, "offset": -0.1, "nodata": 0}}
    applied = _ref(["red"], meta=es, props={"s2:processing_baseline": "05.10", "earthsearch:boa_offset_applied": True})
    not_applied = _ref(["red"], meta=es, props={"s2:processing_baseline": "05.10", "earthsearch:boa_offset_applied": False})
    assert l2a.pixel_meta(applied, "red", spec)["offset"] == 0.0
    assert l2a.pixel_meta(not_applied, "red", spec)["offset"] == -0.1


# ---------------------------------------------------------------- products read onto a site grid

def test_sentinel2_l2a_earth_search(tmp_path):
    """Earth Search keys and raster:bands (offset -0.1); 10 m bands exact, the 20 m band
    bilinear onto 10 m, the 60 m band bilinear, SCL nearest; a dark pixel stays valid."""
    g10, g20, g60 = _grid(10, 60, 60), _grid(20, 30, 30), _grid(60, 10, 10)
    rng = np.random.default_rng(1)
    red = rng.integers(1000, 9000, g10.shape).astype(np.uint16)
    red[0, 0] = 1001  # reflectance 0.0001 after the offset
    red[0, 1] = 900   # negative reflectance: kept valid, clipped to 1
    red[5:8, 5:9] = 0  # no data
    nir = rng.integers(1000, 9000, g10.shape).astype(np.uint16)
    swir16 = _ramp_x(g20, 2000, 40)  # bilinear of a ramp is the ramp
    coastal = _ramp_y(g60, 3000, 120)
    scl = rng.integers(1, 12, g20.shape).astype(np.uint8)
    raster = {"scale": 0.0001, "offset": -0.1, "nodata": 0, "data_type": "uint16"}
    ref = _item(tmp_path / "es", "S2A_ES", {
        "red": (red, g10, raster), "nir": (nir, g10, raster), "swir16": (swir16, g20, raster),
        "coastal": (coastal, g60, raster), "scl": (scl, g20, {"nodata": 0, "data_type": "uint8"}),
    }, properties={"s2:processing_baseline": "05.00"})
    ds = S.read_scene(ref, SITE, ["red", "nir", "swir16", "coastal"], chunks=32, profile="sentinel2-l2a").compute()
    assert set(ds.data_vars) == {"red", "nir", "swir16", "coastal", "valid", "scl"}
    assert all(ds[v].dtype == np.uint16 for v in ("red", "nir", "swir16", "coastal", "scl"))
    exp_red = np.clip(red.astype(np.int64) - 1000, 1, None)
    exp_red[red == 0] = 0
    np.testing.assert_array_equal(ds["red"].values, exp_red)
    assert ds["red"].values[0, 0] == 1 and ds["red"].values[0, 1] == 1 and ds["valid"].values[0, :2].all()
    # 20 m ramp 2000 + 40 k at 20 m centres -> at 10 m centre j: 1990 + 20 j (interior), minus 1000
    j = np.arange(60)
    np.testing.assert_array_equal(ds["swir16"].values[:, 1:-1], np.broadcast_to(990 + 20 * j[1:-1], (60, 58)))
    # 60 m ramp in y: 3000 + 120 k at 60 m centres -> 10 m row i: 3000 + 120 (10 i + 5 - 30) / 60 = 2950 + 20 i
    i = np.arange(60)
    inner = slice(3, -3)
    np.testing.assert_array_equal(ds["coastal"].values[inner, :], np.broadcast_to((1950 + 20 * i[inner])[:, None], (54, 60)))
    # SCL: nearest, every 20 m pixel becomes 2 x 2
    np.testing.assert_array_equal(ds["scl"].values, np.repeat(np.repeat(scl, 2, 0), 2, 1))
    np.testing.assert_array_equal(ds["valid"].values, red != 0)


def test_sentinel2_l2a_planetary_computer_baseline_rule(tmp_path):
    """Planetary Computer keys without raster:bands scale/offset: the offset comes from
    s2:processing_baseline (>= 04.00: -0.1; before: none)."""
    dn = np.full(SITE.shape, 3500, np.uint16)
    refs = {pb: _item(tmp_path / pb, f"S2_{pb}", {"B04": (dn, SITE, {}), "B08": (dn, SITE, {}), "SCL": (np.full(SITE.shape, 4, np.uint8), SITE, {})},
                      properties={"s2:processing_baseline": pb}) for pb in ("03.01", "04.00")}
    old = S.read_scene(refs["03.01"], SITE, ["red", "nir"], profile="sentinel2-l2a").compute()
    new = S.read_scene(refs["04.00"], SITE, ["red", "nir"], profile="sentinel2-l2a").compute()
    assert (old["red"].values == 3500).all() and (new["red"].values == 2500).all()
    assert (new["scl"].values == 4).all()


def test_sentinel2_l1c_b_keys_and_missing_band(tmp_path):
    dn = _ramp_x(SITE, 1200, 10)
    ref = _item(tmp_path / "l1c", "S2_L1C", {"B02": (dn, SITE, {}), "B10": (dn, SITE, {})},
                properties={"s2:processing_baseline": "02.07"})
    ds = S.read_scene(ref, SITE, ["blue", "cirrus"], profile="sentinel2-l1c").compute()
    np.testing.assert_array_equal(ds["cirrus"].values, dn)
    assert "scl" not in ds
    with pytest.raises(SceneError) as exc:
        S.read_scene(ref, SITE, ["blue", "swir22"], profile="sentinel2-l1c")
    assert "'S2_L1C'" in str(exc.value) and "'swir22'" in str(exc.value) and "'B12'" in str(exc.value)
    with pytest.raises(SceneError):
        S.validate_scene(ref, SITE, ["blue", "swir22"], profile="sentinel2-l1c")


def test_landsat_c2_l2_scale_offset_and_qa_pixel(tmp_path):
    """USGS keys, scale 2.75e-5 offset -0.2 from the profile; a 30 m scene covering only the
    western part of a 10 m site: 3 x 3 replication of QA, fill (1) and not valid outside."""
    g30 = _grid(30, 12, 20)  # 360 m wide: the site is 600 m wide
    dn = np.full(g30.shape, 43636, np.uint16)  # 0.275 * 43636 - 2000 = 9999.9 -> 10000
    dn[0, 0] = 7273   # 0.075 -> 1 (dark but valid)
    dn[0, 1] = 5000   # negative -> 1
    dn[0, 2] = 0      # no data
    dn[1, 0] = 65535  # 16022.1 -> 16022
    qa = np.full(g30.shape, 21824, np.uint16)  # clear land
    qa[2, 3] = 22280  # cloud
    qa[0, 2] = 1
    ref = _item(tmp_path / "ls", "LC09_X", {"SR_B4": (dn, g30, {"nodata": 0}), "SR_B5": (dn, g30, {"nodata": 0}),
                                            "QA_PIXEL": (qa, g30, {"nodata": 1})})
    ds = S.read_scene(ref, SITE, ["red", "nir"], chunks=(25, 40), profile="landsat-c2-l2").compute()
    red, valid = ds["red"].values, ds["valid"].values
    # 30 m -> 10 m is bilinear: the middle 10 m pixel of each 30 m pixel sits on its centre
    mid = red[1::3, 1::3][:, :12]
    assert mid[0, 0] == 1 and mid[0, 1] == 1 and mid[0, 2] == 0 and mid[1, 0] == 16022 and mid[10, 10] == 10000
    assert not valid[1, 7] and valid[1, 1] and valid[1, 4]
    # partial cover: site columns 0-35 lie in the scene, 36-59 do not
    assert valid[4:, :36].all() and not valid[:, 36:].any() and (red[:, 36:] == 0).all()
    assert valid[:, :36].mean() > 0.98
    exp_qa = np.ones(SITE.shape, np.uint16)  # QA_PIXEL fill outside the scene
    exp_qa[:, :36] = np.repeat(np.repeat(qa, 3, 0), 3, 1)
    np.testing.assert_array_equal(ds["qa_pixel"].values, exp_qa)


def test_landsat_tm_etm_c2_keys(tmp_path):
    g = _grid(30, 20, 20)
    dn = np.full(g.shape, 10000, np.uint16)  # 0.275 * 10000 - 2000 = 750
    ref = _item(tmp_path / "le7", "LE07_X", {k: (dn, g, {}) for k in ("SR_B1", "SR_B3", "SR_B4", "SR_B5")})
    grid30 = _grid(30, 20, 20)
    ds = S.read_scene(ref, grid30, ["blue", "red", "nir", "swir16"], profile="landsat-c2-l2-tm-etm").compute()
    assert all((ds[b].values == 750).all() for b in ("blue", "red", "nir", "swir16"))
    assert "qa_pixel" not in ds  # the scene has no QA_PIXEL: read without it


def test_landsat_fmask_profile_on_the_shipped_colorado_scene():
    """A real Landsat 7 SLC-off scene shipped with sitewatch: b3/b4/b5 int16 (nodata -9999)
    and fmask, read through the landsat-tm-etm-fmask profile onto its own grid."""
    from sitewatch.realdata import COLORADO

    items = sorted(COLORADO.glob("*/*.json"))
    path = next(p for p in items if p.stem.startswith("LE7"))
    ref = D.scene_ref_from_item(json.loads(path.read_text()), str(path))
    with rasterio.open(path.parent / "b3.tif") as src:
        grid = SiteGrid(crs=src.crs.to_string(), x0=src.transform.c, y0=src.transform.f, resolution=src.transform.a,
                        width=src.width, height=src.height)
        b3 = src.read(1)
    with rasterio.open(path.parent / "fmask.tif") as src:
        fm = src.read(1)
    ds = S.read_scene(ref, grid, ["red", "nir", "swir16"], chunks=32, profile="landsat-tm-etm-fmask").compute()
    exp = np.clip(b3.astype(np.int64), 1, None)
    exp[b3 == -9999] = 0
    np.testing.assert_array_equal(ds["red"].values, exp)
    np.testing.assert_array_equal(ds["fmask"].values, fm)
    assert (b3 == -9999).any()  # SLC-off stripes
    assert not ds["valid"].values[b3 == -9999].any()
    # Fmask calls the SLC-off gaps fill where the bands have no data
    assert (fm[b3 == -9999] == 255).mean() > 0.9


def test_commercial_4band_sub_metre_averaged_onto_coarser_grid(tmp_path):
    """0.5 m b1..b4 onto a 2 m grid: each site pixel is the mean of 4 x 4 source pixels; a
    no-data source pixel is left out of the mean, not averaged in as 0."""
    site = _grid(2.0, 30, 20)
    g05 = _grid(0.5, 120, 80)
    rng = np.random.default_rng(3)
    arrays = {f"b{i}": rng.integers(100, 4000, g05.shape).astype(np.uint16) for i in range(1, 5)}
    arrays["b3"][0:4, 0:4] = 0  # one whole site pixel without data
    arrays["b3"][4, 4] = 0      # one of 16 source pixels without data
    ref = _item(tmp_path / "wv", "WV_X", {k: (a, g05, {"nodata": 0, "scale": 0.0001, "offset": 0}) for k, a in arrays.items()})
    ds = S.read_scene(ref, site, ["blue", "green", "red", "nir"], chunks=16, profile="commercial-4band").compute()
    b3 = arrays["b3"].astype(np.float64)
    blocks = b3.reshape(20, 4, 30, 4).swapaxes(1, 2)
    mean = np.where(blocks > 0, blocks, np.nan).reshape(20, 30, 16)
    mean[0, 0] = 1.0  # (the all-no-data pixel, checked on its own)
    exp = np.nanmean(mean, axis=2)
    got = ds["red"].values.astype(np.float64)
    assert got[0, 0] == 0 and not ds["valid"].values[0, 0]
    assert abs(got[1, 1] - exp[1, 1]) <= 0.5 and got[1, 1] == np.rint(exp[1, 1])
    assert np.abs(got - exp)[1:].max() <= 0.5 and np.abs(got - exp)[0, 1:].max() <= 0.5
    assert ds["valid"].values.sum() == 20 * 30 - 1


def test_asset_meta_scale_wins_over_profile(tmp_path):
    dn = np.full(SITE.shape, 1500, np.uint16)
    ref = _item(tmp_path / "g", "G", {"red": (dn, SITE, {"scale": 0.0002, "offset": 0.01, "nodata": 0})})
    ds = S.read_scene(ref, SITE, ["red"]).compute()
    assert (ds["red"].values == 3100).all()  # (1500 * 0.0002 + 0.01) * 10000


def test_custom_profile_object(tmp_path):
    prof = SensorProfile("mine", (BandSpec("red", ("R",), scale=0.001, nodata=None),), ("red",))
    dn = np.full(SITE.shape, 7, np.uint16)
    ref = _item(tmp_path / "c", "C", {"R": (dn, SITE, {})})
    ds = S.read_scene(ref, SITE, ["red"], profile=prof).compute()
    assert (ds["red"].values == 70).all() and ds["valid"].values.all()
    assert dataclasses.is_dataclass(prof)


def test_profile_read_from_s3_server(s3_server, tmp_path):
    """A Sentinel-2 L2A scene (Planetary Computer keys, 10 m + 20 m + SCL) uploaded with boto3 to
    a real S3 server: validated and read lazily through GDAL /vsis3/; a truncated object there
    is caught by validation naming its s3:// URL."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="scenes")
    g20 = _grid(20, 30, 30)
    dn10 = np.full(SITE.shape, 2345, np.uint16)
    dn20 = np.full(g20.shape, 3456, np.uint16)
    scl = np.full(g20.shape, 5, np.uint8)
    for key, arr, g in (("B04", dn10, SITE), ("B11", dn20, g20), ("SCL", scl, g20)):
        s3.put_object(Bucket="scenes", Key=f"S2X/{key}.tif", Body=S.cog_bytes(arr, g, nodata=0))
    ref = SceneRef("S2X", WHEN, {k: f"s3://scenes/S2X/{k}.tif" for k in ("B04", "B11", "SCL")},
                   properties={"s2:processing_baseline": "04.00"})
    S.validate_scene(ref, SITE, ["red", "swir16"], "sentinel2-l2a")
    ds = S.read_scene(ref, SITE, ["red", "swir16"], chunks=32, profile="sentinel2-l2a").compute()
    assert (ds["red"].values == 1345).all() and (ds["swir16"].values == 2456).all() and (ds["scl"].values == 5).all()
    assert ds["valid"].values.all()
    big = _grid(10, 600, 500)
    data = S.cog_bytes(np.full(big.shape, 7, np.uint16), big, nodata=0, blocksize=128)
    s3.put_object(Bucket="scenes", Key="CUT/B04.tif", Body=data[: len(data) // 2])
    cut = SceneRef("CUT", WHEN, {"B04": "s3://scenes/CUT/B04.tif"})
    with pytest.raises(SceneError) as exc:
        S.validate_scene(cut, big, ["red"], "sentinel2-l2a")
    assert "s3://scenes/CUT/B04.tif" in str(exc.value) and "'CUT'" in str(exc.value)
    assert "testing-secret" not in str(exc.value)

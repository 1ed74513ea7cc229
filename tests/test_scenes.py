"""Tests for sitewatch.io.scenes: COG + STAC scenes written, found and read onto a site grid."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pystac
import pytest
import rasterio
from rasterio.io import MemoryFile
from shapely.geometry import shape

from sitewatch.grid import SiteGrid
from sitewatch.io import discovery as D
from sitewatch.io import scenes as S

UTC = dt.timezone.utc
BANDS = ("blue", "red", "nir")
# a 64 x 80 px site at 10 m in UTM 36N (near Khmeimim)
SITE = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=80, height=64)


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _arrays(grid: SiteGrid, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {b: rng.integers(1, 10000, size=grid.shape, dtype=np.uint16) for b in BANDS}
    return out


def _when(day: int) -> dt.datetime:
    return dt.datetime(2026, 1, day, 8, 30, tzinfo=UTC)


# ---------------------------------------------------------------- cog_bytes / write_scene

def test_cog_bytes_is_tiled_cog_with_overviews():
    g = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=256, height=200)
    arr = (np.arange(g.width * g.height, dtype=np.uint32).reshape(g.shape) % 5000 + 1).astype(np.uint16)
    data = S.cog_bytes(arr, g, nodata=0, blocksize=64)
    with MemoryFile(data) as mem, mem.open() as src:
        assert src.driver == "GTiff"
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.profile["tiled"] is True
        assert src.block_shapes == [(64, 64)]
        assert src.overviews(1) == [2, 4]
        assert src.compression.name.lower() == "deflate"
        assert src.nodata == 0
        assert src.crs.to_epsg() == 32636
        assert src.transform == g.transform
        np.testing.assert_array_equal(src.read(1), arr)


def test_cog_bytes_rejects_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        S.cog_bytes(np.zeros((10, 10), np.uint16), SITE)


def test_write_scene_layout_and_stac_item(tmp_path):
    src = str(tmp_path / "scenes")
    g = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=300, height=280)
    arrays = _arrays(g)
    url = S.write_scene(src, "SCENE_A", _when(5), arrays, g, nodata=0, properties={"eo:cloud_cover": 12.5})
    folder = tmp_path / "scenes" / "SCENE_A"
    assert url == str(folder / "SCENE_A.json")
    assert sorted(os.listdir(folder)) == sorted(["SCENE_A.json"] + [f"{b}.tif" for b in BANDS])

    item_dict = json.loads(Path(url).read_text())
    item = pystac.Item.from_dict(item_dict)
    item.validate()  # core STAC item schema (bundled with pystac)
    assert item.id == "SCENE_A"
    assert item.datetime == _when(5)
    assert set(item.assets) == set(BANDS)
    assert item.properties["eo:cloud_cover"] == 12.5
    assert item.properties["proj:code"] == "EPSG:32636"
    assert item.properties["proj:shape"] == [280, 300]
    assert item.properties["proj:transform"] == [10.0, 0.0, 760000.0, 0.0, -10.0, 3920000.0]
    for name, asset in item.assets.items():
        assert asset.href == f"./{name}.tif"
        assert asset.media_type == pystac.MediaType.COG
        assert "data" in asset.roles
        rb = asset.extra_fields["raster:bands"]
        assert rb[0]["nodata"] == 0 and rb[0]["data_type"] == "uint16" and rb[0]["scale"] == pytest.approx(1e-4)
        assert asset.extra_fields["eo:bands"][0]["common_name"] == name
    # footprint: the grid's bounds in lon/lat
    geom = shape(item_dict["geometry"])
    assert geom.bounds == pytest.approx(tuple(item_dict["bbox"]))
    west, south, east, north = item_dict["bbox"]
    assert 35.0 < west < east < 37.0 and 35.0 < south < north < 36.0

    for name in BANDS:
        with rasterio.open(folder / f"{name}.tif") as r:
            assert r.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert r.profile["tiled"] is True
            assert r.block_shapes == [(256, 256)]
            assert r.overviews(1) == [2]
            assert r.nodata == 0
            assert r.crs.to_string() == "EPSG:32636"
            assert r.transform == g.transform
            np.testing.assert_array_equal(r.read(1), arrays[name])


def test_write_scene_rejects_naive_datetime_and_no_bands(tmp_path):
    with pytest.raises(ValueError, match="naive"):
        S.write_scene(str(tmp_path), "X", dt.datetime(2026, 1, 1), _arrays(SITE), SITE)
    with pytest.raises(ValueError, match="bands"):
        S.write_scene(str(tmp_path), "X", _when(1), {}, SITE)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- read_scene

@pytest.fixture
def written(tmp_path):
    src = str(tmp_path / "scenes")
    arrays = _arrays(SITE, seed=1)
    arrays["red"][:5, :7] = 0  # nodata in one band only
    arrays["nir"][-3:, -2:] = 0
    S.write_scene(src, "S1", _when(1), arrays, SITE)
    (ref,), _ = D.find_scenes(src)
    return ref, arrays


def test_read_scene_is_lazy_and_equals_written(written):
    ref, arrays = written
    ds = S.read_scene(ref, SITE, BANDS, chunks=32)
    assert set(ds.data_vars) == set(BANDS) | {"valid"}
    for b in BANDS:
        assert isinstance(ds[b].data, da.Array), f"{b} is not dask-backed"
        assert ds[b].dims == ("y", "x")
        assert ds[b].dtype == np.uint16
        assert ds[b].data.chunksize == (32, 32)
    assert isinstance(ds["valid"].data, da.Array)
    assert ds["valid"].dtype == bool
    c = SITE.coords()
    np.testing.assert_array_equal(ds.y.values, c["y"])
    np.testing.assert_array_equal(ds.x.values, c["x"])
    loaded = ds.compute()
    for b in BANDS:
        np.testing.assert_array_equal(loaded[b].values, arrays[b])
    expected_valid = np.all([arrays[b] != 0 for b in BANDS], axis=0)
    np.testing.assert_array_equal(loaded["valid"].values, expected_valid)
    assert (~expected_valid).sum() == 5 * 7 + 3 * 2


def test_read_scene_band_subset_and_order(written):
    ref, arrays = written
    ds = S.read_scene(ref, SITE, ["nir", "blue"]).compute()
    assert list(ds.data_vars) == ["nir", "blue", "valid"]
    np.testing.assert_array_equal(ds["nir"].values, arrays["nir"])
    np.testing.assert_array_equal(ds["valid"].values, (arrays["nir"] != 0) & (arrays["blue"] != 0))


@pytest.mark.parametrize("dcol, drow", [(10, 5), (-7, -3), (0, 20)])
def test_read_scene_onto_offset_grid(written, dcol, drow):
    ref, arrays = written
    r = SITE.resolution
    g2 = SiteGrid(crs=SITE.crs, x0=SITE.x0 + dcol * r, y0=SITE.y0 - drow * r, resolution=r, width=SITE.width, height=SITE.height)
    ds = S.read_scene(ref, g2, BANDS, chunks=32).compute()
    h, w = SITE.shape
    expected = np.zeros(SITE.shape, np.uint16)
    exp_valid = np.zeros(SITE.shape, bool)
    src_valid = np.all([arrays[b] != 0 for b in BANDS], axis=0)
    # destination pixel (i, j) is source pixel (i + drow, j + dcol)
    rs_dst = slice(max(0, -drow), min(h, h - drow))
    cs_dst = slice(max(0, -dcol), min(w, w - dcol))
    rs_src = slice(max(0, drow), min(h, h + drow))
    cs_src = slice(max(0, dcol), min(w, w + dcol))
    expected[rs_dst, cs_dst] = arrays["red"][rs_src, cs_src]
    exp_valid[rs_dst, cs_dst] = src_valid[rs_src, cs_src]
    np.testing.assert_array_equal(ds["red"].values, expected)
    np.testing.assert_array_equal(ds["valid"].values, exp_valid)
    # outside the scene's coverage nothing is valid
    outside = np.ones(SITE.shape, bool)
    outside[rs_dst, cs_dst] = False
    assert outside.any()
    assert not ds["valid"].values[outside].any()
    np.testing.assert_array_equal(ds.x.values, g2.coords()["x"])


def test_read_scene_from_geographic_crs(tmp_path):
    """A scene in EPSG:4326 covering the site: values follow the source's longitude/latitude."""
    site = SiteGrid.centred(35.95, 35.40, width=64, height=64, resolution=10.0)  # UTM 36N
    res = 0.0001
    src_grid = SiteGrid(crs="EPSG:4326", x0=35.94, y0=35.41, resolution=res, width=200, height=200)
    cols = np.broadcast_to(np.arange(1, 201, dtype=np.uint16)[None, :], src_grid.shape).copy()
    rows = np.broadcast_to(np.arange(1, 201, dtype=np.uint16)[:, None], src_grid.shape).copy()
    S.write_scene(str(tmp_path), "GEO", _when(2), {"blue": cols, "red": rows, "nir": cols}, src_grid)
    (ref,), _ = D.find_scenes(str(tmp_path))
    ds = S.read_scene(ref, site, BANDS, chunks=64).compute()
    assert ds["valid"].values.all()
    # expected nearest source pixel of every site pixel centre
    c = site.coords()
    xx, yy = np.meshgrid(c["x"], c["y"])
    lon, lat = site.to_lonlat(xx, yy)
    exp_col = np.floor((lon - 35.94) / res).astype(int) + 1
    exp_row = np.floor((35.41 - lat) / res).astype(int) + 1
    got_col = ds["blue"].values.astype(int)
    got_row = ds["red"].values.astype(int)
    assert np.abs(got_col - exp_col).max() <= 1
    assert np.abs(got_row - exp_row).max() <= 1
    assert (got_col == exp_col).mean() > 0.98 and (got_row == exp_row).mean() > 0.98
    # columns go east, rows go south
    assert np.all(np.diff(got_col.mean(axis=0)) > 0)
    assert np.all(np.diff(got_row.mean(axis=1)) > 0)


def test_read_scene_from_other_utm_zone_partial_cover(tmp_path):
    """A scene in EPSG:32637 covering only the western part of the site."""
    from pyproj import Transformer

    site = SiteGrid.centred(35.95, 35.40, width=64, height=64, resolution=10.0)  # UTM 36N
    to37 = Transformer.from_crs(site.crs, "EPSG:32637", always_xy=True)
    # the site's centre in zone 37; the scene spans far west, north and south of the site but
    # ends 150 m east of the centre
    cx, cy = to37.transform((site.bounds[0] + site.bounds[2]) / 2, (site.bounds[1] + site.bounds[3]) / 2)
    east = round(cx) + 150.0
    src_grid = SiteGrid(crs="EPSG:32637", x0=east - 1500.0, y0=round(cy) + 1000.0, resolution=10.0, width=150, height=200)
    const = {b: np.full(src_grid.shape, v, np.uint16) for b, v in zip(BANDS, (1111, 2222, 3333))}
    S.write_scene(str(tmp_path), "Z37", _when(3), const, src_grid)
    (ref,), _ = D.find_scenes(str(tmp_path))
    ds = S.read_scene(ref, site, BANDS, chunks=32).compute()
    valid = ds["valid"].values
    # expected coverage: site pixel centres whose zone-37 x is west of the scene's east edge
    c = site.coords()
    xx, yy = np.meshgrid(c["x"], c["y"])
    x37, _ = to37.transform(xx, yy)
    covered = x37 < east
    assert 0.4 < covered.mean() < 0.9
    boundary = np.abs(x37 - east) < 15.0
    assert np.array_equal(valid[~boundary], covered[~boundary])
    # values are the scene's where covered, nodata elsewhere
    for b, v in zip(BANDS, (1111, 2222, 3333)):
        assert np.all(ds[b].values[valid] == v)
        assert np.all(ds[b].values[~valid] == 0)


# ---------------------------------------------------------------- errors

def test_missing_band_names_scene_and_band(written):
    ref, _ = written
    with pytest.raises(S.SceneError) as exc:
        S.read_scene(ref, SITE, ["blue", "swir16", "red"])
    msg = str(exc.value)
    assert "'S1'" in msg and "swir16" in msg
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_corrupt_band_file_names_the_file(written, damage):
    ref, _ = written
    path = Path(ref.assets["nir"])
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"this is not a tiff" * 100)
    else:
        path.unlink()
    with pytest.raises(S.SceneError) as exc:
        S.read_scene(ref, SITE, BANDS)
    msg = str(exc.value)
    assert "'S1'" in msg and "'nir'" in msg and str(path) in msg
    with pytest.raises(S.SceneError):
        S.validate_scene(ref, SITE, BANDS)


def test_scene_without_crs(tmp_path, written):
    ref, arrays = written
    path = Path(ref.assets["red"])
    with rasterio.open(path, "w", driver="GTiff", width=SITE.width, height=SITE.height, count=1, dtype="uint16",
                       transform=SITE.transform) as dst:
        dst.write(arrays["red"], 1)
    with pytest.raises(S.SceneError, match="no CRS") as exc:
        S.read_scene(ref, SITE, BANDS)
    assert "'red'" in str(exc.value)


def test_scene_not_overlapping_site(tmp_path):
    far = SiteGrid(crs="EPSG:32636", x0=500000.0, y0=4100000.0, resolution=10.0, width=80, height=64)
    S.write_scene(str(tmp_path), "FAR", _when(2), _arrays(far), far)
    (ref,), _ = D.find_scenes(str(tmp_path))
    with pytest.raises(S.SceneError, match="does not overlap") as exc:
        S.read_scene(ref, SITE, BANDS)
    assert "'FAR'" in str(exc.value)
    with pytest.raises(S.SceneError, match="does not overlap"):
        S.validate_scene(ref, SITE, BANDS)


def test_scene_touching_site_edge_does_not_overlap(tmp_path):
    # a scene whose east edge is exactly the site's west edge shares no pixel with it
    g = SiteGrid(crs=SITE.crs, x0=SITE.x0 - 800.0, y0=SITE.y0, resolution=10.0, width=80, height=64)
    S.write_scene(str(tmp_path), "WEST", _when(2), _arrays(g), g)
    (ref,), _ = D.find_scenes(str(tmp_path))
    with pytest.raises(S.SceneError, match="does not overlap"):
        S.read_scene(ref, SITE, BANDS)


def test_validate_scene_ok(written):
    ref, _ = written
    S.validate_scene(ref, SITE, BANDS)  # no exception


# ---------------------------------------------------------------- site grid: zones, resolutions, chunks

def _scene_in(tmp_path, sid: str, grid: SiteGrid, values: dict[str, np.ndarray], nodata=0):
    S.write_scene(str(tmp_path / sid), sid, _when(4), values, grid, nodata=nodata)
    (ref,), _ = D.find_scenes(str(tmp_path / sid))
    return ref


def test_site_spanning_two_utm_zones_read_from_two_scenes(tmp_path):
    """A site on the 36/37 zone boundary (36 E) in EPSG:32636; one scene in zone 36 covers its
    western part, one in zone 37 its eastern part (overlapping by about 100 m): each read is
    partial, their union covers the site, and each scene's values land on its own side."""
    from pyproj import Transformer

    site = SiteGrid.centred(36.0, 35.4, width=80, height=48, resolution=10.0, crs="EPSG:32636")
    to37 = Transformer.from_crs(site.crs, "EPSG:32637", always_xy=True)
    l, b, r, t = site.bounds
    mid = (l + r) / 2
    west = SiteGrid.from_bounds((l - 500, b - 500, mid + 50, t + 500), 10.0, "EPSG:32636")
    xs, ys = to37.transform([mid - 50, r + 500, mid - 50, r + 500], [b - 500, b - 500, t + 500, t + 500])
    east = SiteGrid.from_bounds((min(xs), min(ys), max(xs), max(ys)), 20.0, "EPSG:32637")  # 20 m: bilinear
    a = _scene_in(tmp_path, "Z36", west, {k: np.full(west.shape, v, np.uint16) for k, v in zip(BANDS, (1111, 1211, 1311))})
    z = _scene_in(tmp_path, "Z37", east, {k: np.full(east.shape, v, np.uint16) for k, v in zip(BANDS, (2222, 2322, 2422))})
    da_ = S.read_scene(a, site, BANDS, chunks=32).compute()
    db_ = S.read_scene(z, site, BANDS, chunks=32).compute()
    va, vb = da_["valid"].values, db_["valid"].values
    assert 0.45 < va.mean() < 0.65 and 0.45 < vb.mean() < 0.65
    assert (va | vb).all()
    assert (va & vb).any()  # the overlap
    x = site.coords()["x"]
    assert va[:, x < mid].all() and not va[:, x > mid + 60].any()
    # (zone 37's grid is turned by about 1.7 degrees here: its straight west edge wanders ~50 m)
    assert vb[:, x > mid].all() and not vb[:, x < mid - 150].any()
    # constant scenes stay constant after reprojection (no nodata bleeding at the edges)
    assert set(np.unique(da_["red"].values[va])) == {1211} and set(np.unique(db_["red"].values[vb])) == {2322}
    assert (da_["red"].values[~va] == 0).all() and (db_["red"].values[~vb] == 0).all()


def test_geographic_scene_partly_covering_the_site(tmp_path):
    site = SiteGrid.centred(35.95, 35.40, width=64, height=64, resolution=10.0)
    l, b, r, t = site.bounds
    lon0, lat0 = site.to_lonlat(l, t)
    lon1, lat1 = site.to_lonlat(r, b)
    lon_mid = (lon0 + lon1) / 2
    # 0.0002 deg pixels (about 18 x 22 m) from well west of the site to its middle
    g = SiteGrid.from_bounds((lon0 - 0.01, lat1 - 0.01, lon_mid, lat0 + 0.01), 0.0002, "EPSG:4326")
    ref = _scene_in(tmp_path, "GEO", g, {k: np.full(g.shape, 4321, np.uint16) for k in BANDS})
    ds = S.read_scene(ref, site, BANDS, chunks=(20, 50)).compute()
    c = site.coords()
    xx, yy = np.meshgrid(c["x"], c["y"])
    lon, _ = site.to_lonlat(xx, yy)
    inside = lon < g.bounds[2] - 0.0001
    outside = lon > g.bounds[2] + 0.0001
    assert ds["valid"].values[inside].all() and not ds["valid"].values[outside].any()
    assert 0.3 < ds["valid"].values.mean() < 0.7
    assert set(np.unique(ds["red"].values[ds["valid"].values])) == {4321}


def test_nodata_never_bleeds_when_upsampling(tmp_path):
    """A 30 m band with no-data holes onto a 10 m grid (bilinear): valid pixels keep the
    scene's constant value, never a mix with the no-data 0; the hole stays not valid."""
    g30 = SiteGrid(crs=SITE.crs, x0=SITE.x0, y0=SITE.y0, resolution=30.0, width=27, height=22)
    arr = np.full(g30.shape, 3000, np.uint16)
    arr[5:9, 5:9] = 0
    arr[15, 20] = 0
    ref = _scene_in(tmp_path, "HOLES", g30, {"red": arr})
    ds = S.read_scene(ref, SITE, ["red"], chunks=32).compute()
    v = ds["valid"].values
    assert set(np.unique(ds["red"].values[v])) == {3000}
    assert not v[3 * 6:3 * 8, 3 * 6:3 * 8].any()  # the middle of the 4 x 4 hole
    assert not v[3 * 15 + 1, 3 * 20 + 1]  # the centre of the single-pixel hole


def test_20m_band_onto_10m_grid_is_bilinear(tmp_path):
    g20 = SiteGrid(crs=SITE.crs, x0=SITE.x0, y0=SITE.y0, resolution=20.0, width=40, height=32)
    ramp = np.broadcast_to((1000 + 40 * np.arange(40)).astype(np.uint16), g20.shape).copy()
    ref = _scene_in(tmp_path, "R20", g20, {"swir16": ramp, "red": np.repeat(np.repeat(ramp[:, ::2], 2, 0), 2, 1)[:32, :40]})
    ds = S.read_scene(ref, SITE, ["swir16"], chunks=32).compute()
    # 1000 + 40 k at 20 m centres 10 + 20 k -> at 10 m centres 5 + 10 j: 990 + 20 j
    j = np.arange(1, SITE.width - 1)
    np.testing.assert_array_equal(ds["swir16"].values[:, 1:-1], np.broadcast_to(990 + 20 * j, (SITE.height, SITE.width - 2)))


@pytest.mark.parametrize("chunks", [((17, 30, 17), (40, 24, 16)), 23, (64, 80)])
def test_numpy_and_uneven_dask_chunks_read_identically(tmp_path, chunks):
    """A scene in another zone (EPSG:32637) at 20 m onto the 10 m site grid (bilinear, partial
    cover) with a QA-like band: chunked reads equal the one-block numpy read pixel for pixel."""
    from pyproj import Transformer

    to37 = Transformer.from_crs(SITE.crs, "EPSG:32637", always_xy=True)
    l, b, r, t = SITE.bounds
    xs, ys = to37.transform([l, r], [b, t])
    g = SiteGrid.from_bounds((min(xs) - 300, min(ys) - 300, max(xs) - 200, max(ys) + 300), 20.0, "EPSG:32637")
    rng = np.random.default_rng(5)
    vals = {k: rng.integers(1, 10000, g.shape).astype(np.uint16) for k in BANDS}
    vals["red"][10:14, 10:20] = 0
    ref = _scene_in(tmp_path, "Z37", g, vals)
    eager = S.read_scene(ref, SITE, BANDS, chunks=None)
    assert isinstance(eager["red"].data, np.ndarray)
    lazy = S.read_scene(ref, SITE, BANDS, chunks=chunks)
    assert isinstance(lazy["red"].data, da.Array)
    if isinstance(chunks, tuple) and isinstance(chunks[0], tuple):
        assert lazy["red"].data.chunks == chunks
    got = lazy.compute()
    for v in (*BANDS, "valid"):
        np.testing.assert_array_equal(got[v].values, eager[v].values)
    assert 0.5 < eager["valid"].values.mean() < 1.0


def test_read_scene_pickles_for_worker_processes(written):
    """The lazy Dataset (its graph: plain functions and values) survives plain pickling, as it
    must to reach Dask worker processes."""
    import pickle

    ref, arrays = written
    ds = S.read_scene(ref, SITE, BANDS, chunks=32)
    again = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(again["nir"].values, arrays["nir"])


def test_bad_chunks_argument(written):
    ref, _ = written
    with pytest.raises(ValueError, match="chunks got"):
        S.read_scene(ref, SITE, BANDS, chunks=((10, 10), (80,)))


# ---------------------------------------------------------------- more bad input

def _big_scene(tmp_path):
    """A 600 x 500 px scene with 128 px tiles (several tiles per band) covering SITE."""
    g = SiteGrid(crs=SITE.crs, x0=SITE.x0 - 2000, y0=SITE.y0 + 2000, resolution=10.0, width=600, height=500)
    rng = np.random.default_rng(9)
    ref = _scene_in(tmp_path, "BIG", g, {k: rng.integers(1, 10000, g.shape).astype(np.uint16) for k in BANDS})
    return ref, g


def test_truncated_cog_is_caught_by_validation_and_by_the_read(tmp_path):
    """A COG cut in half still opens (header and overviews are at the front) but its tiles are
    gone: validation reads a tile and fails naming the object; so does the lazy read."""
    ref, g = _big_scene(tmp_path)
    site = SiteGrid(crs=SITE.crs, x0=g.x0 + 100, y0=g.y0 - 3000, resolution=10.0, width=300, height=150)  # lower half
    S.validate_scene(ref, site, BANDS)
    path = Path(ref.assets["nir"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with rasterio.open(path) as src:  # GDAL still opens it
        assert src.count == 1
    with pytest.raises(S.SceneError) as exc:
        S.validate_scene(ref, site, BANDS)
    msg = str(exc.value)
    assert "'BIG'" in msg and "'nir'" in msg and str(path) in msg and "truncated or corrupt" in msg
    ds = S.read_scene(ref, site, BANDS, chunks=64)  # headers are fine
    with pytest.raises(S.SceneError) as exc:
        ds.compute()
    assert "'BIG'" in str(exc.value) and "'nir'" in str(exc.value) and str(path) in str(exc.value)


def test_garbage_in_tiles_is_caught_by_validation(tmp_path):
    ref, g = _big_scene(tmp_path)
    path = Path(ref.assets["blue"])
    data = bytearray(path.read_bytes())
    tail = len(data) // 4  # overwrite the last quarter (the last full-resolution tiles) with garbage
    data[-tail:] = np.random.default_rng(0).integers(0, 256, tail, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(S.SceneError, match="truncated or corrupt") as exc:
        S.validate_scene(ref, g, BANDS)
    assert "'blue'" in str(exc.value) and str(path) in str(exc.value)


def test_multi_band_file_where_one_band_is_expected(written):
    ref, arrays = written
    path = Path(ref.assets["red"])
    with rasterio.open(path, "w", driver="GTiff", width=SITE.width, height=SITE.height, count=3, dtype="uint16",
                       crs=SITE.crs, transform=SITE.transform, nodata=0) as dst:
        dst.write(np.stack([arrays["red"]] * 3))
    for call in (S.read_scene, S.validate_scene):
        with pytest.raises(S.SceneError, match="holds 3 raster bands; expected 1") as exc:
            call(ref, SITE, BANDS)
        assert "'S1'" in str(exc.value) and "'red'" in str(exc.value) and str(path) in str(exc.value)


def test_missing_band_with_a_sensor_profile(written):
    ref, _ = written
    with pytest.raises(S.SceneError) as exc:
        S.read_scene(ref, SITE, ["red", "swir22"], profile="sentinel2-l2a")
    msg = str(exc.value)
    assert "'S1'" in msg and "'swir22'" in msg and "'B12'" in msg and "sentinel2-l2a" in msg


def test_qa_band_in_bands_is_read_as_qa_when_present(written):
    ref, arrays = written
    ds = S.read_scene(ref, SITE, ["red", "qa_pixel"], profile="landsat-c2-l2")  # the scene has no QA_PIXEL
    assert set(ds.data_vars) == {"red", "valid"}
    with pytest.raises(ValueError, match="one of"):
        S.read_scene(ref, SITE, ["red", "scl"], profile="landsat-c2-l2")  # not a band of this profile
    with pytest.raises(ValueError, match="at least one reflectance band"):
        S.read_scene(ref, SITE, ["qa_pixel"], profile="landsat-c2-l2")


# ---------------------------------------------------------------- real data

def test_real_landsat8_scene_through_a_stac_item(tmp_path, shared_data):
    """The real (pre-Collection L1) Landsat 8 scene in ../shared/data, through a STAC item built
    here, onto a 10 m site grid that sticks 300 m out of the scene's west edge: 30 m bands
    bilinear, BQA nearest; the pixels BQA calls high-confidence cloud are far brighter in blue
    than the clear ones; outside the scene nothing is valid and BQA is fill (1)."""
    from shapely.geometry import box, mapping

    from sitewatch.sensors import BandSpec, SensorProfile

    folder = shared_data / "landsat8-cloudy-scene"
    with rasterio.open(folder / "l8_B2.tif") as src:
        assert src.crs.to_epsg() == 32616 and src.res == (30.0, 30.0) and src.nodata is None
        x0, top = src.transform.c, src.transform.f
    keys = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "swir16": "B6"}
    raster = {"scale": 2e-5, "offset": -0.1, "nodata": 0}  # L1 DN -> TOA reflectance (REFLECTANCE_MULT/ADD)
    item = pystac.Item("LC08_L1_CLOUDY", geometry=mapping(box(-87.5, 30.6, -87.3, 30.8)), bbox=[-87.5, 30.6, -87.3, 30.8],
                       datetime=_when(5), properties={})
    for name, key in keys.items():
        item.add_asset(key, pystac.Asset(str(folder / f"l8_{key}.tif"), media_type=pystac.MediaType.GEOTIFF, roles=["data"],
                                         extra_fields={"raster:bands": [raster], "eo:bands": [{"name": key, "common_name": name}]}))
    item.add_asset("BQA", pystac.Asset(str(folder / "l8_BQA.tif"), media_type=pystac.MediaType.GEOTIFF, roles=["data"],
                                       extra_fields={"raster:bands": [{"nodata": 1}]}))
    item_path = tmp_path / "item.json"
    item_path.write_text(json.dumps(item.to_dict(include_self_link=False)))
    ref = D.scene_ref_from_item(json.loads(item_path.read_text()), str(item_path))
    profile = SensorProfile(
        "landsat8-l1-pre", tuple(BandSpec(n, (k,), resolution=30) for n, k in keys.items())
        + (BandSpec("bqa", ("BQA",), scale=1.0, nodata=1, qa=True),),
        tuple(keys), qa_band="bqa", qa_kind="bqa-pre")
    # rows 200-240, cols -10..40 of the 30 m scene (a cloudy part), at 10 m
    site = SiteGrid(crs="EPSG:32616", x0=x0 - 300, y0=top - 200 * 30, resolution=10.0, width=150, height=120)
    S.validate_scene(ref, site, list(keys), profile)
    ds = S.read_scene(ref, site, list(keys), chunks=64, profile=profile).compute()
    valid, bqa = ds["valid"].values, ds["bqa"].values
    assert not valid[:, :30].any() and (bqa[:, :30] == 1).all()
    assert valid[:, 31:].all()
    with rasterio.open(folder / "l8_BQA.tif") as src:
        q30 = src.read(1, window=rasterio.windows.Window(0, 200, 40, 40))
    np.testing.assert_array_equal(bqa[:, 30:], np.repeat(np.repeat(q30, 3, 0), 3, 1))
    cloud = ((bqa >> 14) & 3) == 3
    clear = valid & ~cloud & (((bqa >> 12) & 3) < 2)
    assert 0.2 < cloud[:, 30:].mean() < 0.7
    blue = ds["blue"].values.astype(float)
    assert np.median(blue[cloud]) > 1.3 * np.median(blue[clear])
    # TOA reflectance x 10000 = DN * 0.2 - 1000, at a 30 m pixel centre
    with rasterio.open(folder / "l8_B2.tif") as src:
        dn = int(src.read(1, window=rasterio.windows.Window(20, 220, 1, 1))[0, 0])
    assert ds["blue"].values[(220 - 200) * 3 + 1, 30 + 20 * 3 + 1] == round(dn * 0.2 - 1000)

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

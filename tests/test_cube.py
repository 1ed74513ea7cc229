"""Tests for sitewatch.io.cube: the per-site Zarr datacube (template, region writes, commit flags)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

import sitewatch
from sitewatch.grid import SiteGrid
from sitewatch.io import cube as C

UTC = dt.timezone.utc
BANDS = ("blue", "red", "nir")
GRID = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=96, height=80)
CHUNK = 64  # 80 x 96 px -> 2 x 2 spatial chunks, the last ones partial


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _t(day: int, hour: int = 8) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, 30, tzinfo=UTC)


def _scene(seed: int, grid: SiteGrid = GRID, bands=BANDS, lazy: bool = False) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    data = {b: (("y", "x"), rng.integers(1, 10000, size=grid.shape, dtype=np.uint16)) for b in bands}
    valid = np.ones(grid.shape, bool)
    valid[: 10 + seed, :20] = False
    data["valid"] = (("y", "x"), valid)
    ds = xr.Dataset(data, coords=grid.coords())
    # lazy input chunked like the cube (region writes need dask chunks aligned with Zarr chunks)
    return ds.chunk({"y": CHUNK, "x": CHUNK}) if lazy else ds


def _derived(seed: int, grid: SiteGrid = GRID) -> xr.Dataset:
    rng = np.random.default_rng(100 + seed)
    score = rng.normal(0, 3, size=grid.shape).astype(np.float32)
    score[:5, :5] = np.nan
    return xr.Dataset({
        "cloud": (("y", "x"), rng.random(grid.shape) < 0.2),
        "shadow": (("y", "x"), rng.random(grid.shape) < 0.1),
        "change_score": (("y", "x"), score),
        "change": (("y", "x"), np.nan_to_num(score) > 5),
    }, coords=grid.coords())


def _snapshot(url: str) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(url):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, url)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture
def cube_url(tmp_path) -> str:
    return str(tmp_path / "site" / "cube.zarr")


# ---------------------------------------------------------------- extend / slots

def test_slots_of_missing_cube(cube_url):
    assert C.slots(cube_url) == []


def test_extend_creates_slots_in_time_order(cube_url):
    idx = C.extend(cube_url, GRID, BANDS, [("B", _t(5)), ("A", _t(9)), ("C", _t(1))], chunk=CHUNK)
    assert idx == {"B": 1, "A": 2, "C": 0}
    s = C.slots(cube_url)
    assert [x.scene_id for x in s] == ["C", "B", "A"]
    assert [x.index for x in s] == [0, 1, 2]
    assert [x.time for x in s] == [np.datetime64("2026-01-01T08:30"), np.datetime64("2026-01-05T08:30"), np.datetime64("2026-01-09T08:30")]
    assert not any(x.ingested or x.analysed for x in s)


def test_extend_is_idempotent(cube_url):
    scenes = [("A", _t(1)), ("B", _t(2))]
    first = C.extend(cube_url, GRID, BANDS, scenes, chunk=CHUNK)
    before = _snapshot(cube_url)
    again = C.extend(cube_url, GRID, BANDS, list(reversed(scenes)), chunk=CHUNK)
    assert again == first
    assert _snapshot(cube_url) == before  # nothing rewritten
    assert len(C.slots(cube_url)) == 2


def test_second_extend_appends(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(3)), ("B", _t(6))], chunk=CHUNK)
    C.write_scene_slice(cube_url, 0, _scene(0))
    # a mix of known and new scenes; one new scene is older than the known ones
    idx = C.extend(cube_url, GRID, BANDS, [("B", _t(6)), ("D", _t(9)), ("OLD", _t(1))], chunk=CHUNK)
    assert idx == {"B": 1, "D": 3, "OLD": 2}  # new slots appended, in time order among themselves
    s = C.slots(cube_url)
    assert [x.scene_id for x in s] == ["A", "B", "OLD", "D"]
    assert [x.ingested for x in s] == [True, False, False, False]
    # the data already written is kept
    ds = C.open_cube(cube_url, committed_only=False)
    np.testing.assert_array_equal(ds["red"].sel(time=np.datetime64("2026-01-03T08:30")).values, _scene(0)["red"].values)
    # open_cube gives the slots in time order
    assert [str(v) for v in ds.scene_id.values] == ["OLD", "A", "B", "D"]
    assert np.all(np.diff(ds.time.values) > np.timedelta64(0))


def test_extend_rejects_incompatible_cube(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    other = SiteGrid(crs=GRID.crs, x0=GRID.x0 + 10.0, y0=GRID.y0, resolution=10.0, width=96, height=80)
    with pytest.raises(C.CubeError, match="origin"):
        C.extend(cube_url, other, BANDS, [("B", _t(2))], chunk=CHUNK)
    with pytest.raises(C.CubeError, match="lacks"):
        C.extend(cube_url, GRID, BANDS + ("swir16",), [("B", _t(2))], chunk=CHUNK)
    assert [s.scene_id for s in C.slots(cube_url)] == ["A"]


# ---------------------------------------------------------------- check_compatible

def test_check_compatible(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    C.check_compatible(cube_url, GRID, BANDS)  # ok
    C.check_compatible(cube_url, GRID, ["red"])  # a subset of bands is ok
    cases = {
        "shape": SiteGrid(crs=GRID.crs, x0=GRID.x0, y0=GRID.y0, resolution=10.0, width=97, height=80),
        "origin": SiteGrid(crs=GRID.crs, x0=GRID.x0, y0=GRID.y0 + 10.0, resolution=10.0, width=96, height=80),
        "resolution": SiteGrid(crs=GRID.crs, x0=GRID.x0, y0=GRID.y0, resolution=20.0, width=96, height=80),
    }
    for what, g in cases.items():
        with pytest.raises(C.CubeError) as exc:
            C.check_compatible(cube_url, g, BANDS)
        assert cube_url in str(exc.value), what
    with pytest.raises(C.CubeError, match="swir22"):
        C.check_compatible(cube_url, GRID, ["red", "swir22"])


def test_check_compatible_detects_another_crs(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    same_numbers_other_crs = SiteGrid(crs="EPSG:32637", x0=GRID.x0, y0=GRID.y0, resolution=10.0, width=96, height=80)
    with pytest.raises(C.CubeError, match="(?i)crs"):
        C.check_compatible(cube_url, same_numbers_other_crs, BANDS)
    # the same CRS spelled differently is compatible
    from pyproj import CRS

    C.check_compatible(cube_url, SiteGrid(crs=CRS.from_epsg(32636).to_wkt(), x0=GRID.x0, y0=GRID.y0,
                                          resolution=10.0, width=96, height=80), BANDS)


# ---------------------------------------------------------------- writes and commit flags

def test_write_scene_slice_commits_and_returns_valid_fraction(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2))], chunk=CHUNK)
    sc = _scene(3, lazy=True)
    vf = C.write_scene_slice(cube_url, 1, sc)
    expected_vf = float(sc["valid"].values.mean())
    assert vf == pytest.approx(expected_vf)
    s = C.slots(cube_url)
    assert [(x.scene_id, x.ingested, x.analysed) for x in s] == [("A", False, False), ("B", True, False)]
    ds = C.open_cube(cube_url)
    assert [str(v) for v in ds.scene_id.values] == ["B"]
    for b in BANDS:
        np.testing.assert_array_equal(ds[b].isel(time=0).values, sc[b].values)
    np.testing.assert_array_equal(ds["valid"].isel(time=0).values, sc["valid"].values)
    assert float(ds["valid_fraction"].values[0]) == pytest.approx(expected_vf)
    assert np.isnan(ds["cloud_fraction"].values[0])
    # derived layers still at their fill values
    assert not ds["cloud"].isel(time=0).values.any()
    assert np.isnan(ds["change_score"].isel(time=0).values).all()


def test_open_cube_hides_uncommitted_slots(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2)), ("C", _t(3))], chunk=CHUNK)
    C.write_scene_slice(cube_url, 0, _scene(0))
    C.write_scene_slice(cube_url, 2, _scene(2))
    assert [str(v) for v in C.open_cube(cube_url).scene_id.values] == ["A", "C"]
    everything = C.open_cube(cube_url, committed_only=False)
    assert [str(v) for v in everything.scene_id.values] == ["A", "B", "C"]
    assert everything["ingested"].values.tolist() == [True, False, True]
    # an uncommitted slot holds fill values
    assert not everything["red"].isel(time=1).values.any()


def test_open_cube_missing(cube_url):
    with pytest.raises(C.CubeError, match="no sitewatch cube"):
        C.open_cube(cube_url)


def test_open_cube_contract(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2))], chunk=CHUNK)
    C.write_scene_slice(cube_url, 0, _scene(0))
    C.write_scene_slice(cube_url, 1, _scene(1))
    C.write_derived(cube_url, 0, _derived(0))
    ds = C.open_cube(cube_url)
    # georeference through rioxarray
    assert ds.rio.crs is not None and ds.rio.crs.to_epsg() == 32636
    assert ds.rio.transform() == GRID.transform
    assert ds["red"].rio.crs.to_epsg() == 32636
    assert ds["red"].rio.transform() == GRID.transform
    assert ds.rio.shape == GRID.shape
    # dims and coordinates
    assert dict(ds.sizes) == {"time": 2, "y": 80, "x": 96}
    assert np.issubdtype(ds.time.dtype, np.datetime64)
    np.testing.assert_array_equal(ds.time.values, np.array(["2026-01-01T08:30", "2026-01-02T08:30"], dtype="datetime64[ns]"))
    assert ds["scene_id"].dims == ("time",)
    assert [str(v) for v in ds.scene_id.values] == ["A", "B"]
    c = GRID.coords()
    np.testing.assert_array_equal(ds.y.values, c["y"])
    np.testing.assert_array_equal(ds.x.values, c["x"])
    # variables
    for b in BANDS:
        assert ds[b].dims == ("time", "y", "x") and ds[b].dtype == np.uint16
        assert ds[b].attrs["eo_common_name"] == b
    for v in ("valid", "cloud", "shadow", "change"):
        assert ds[v].dims == ("time", "y", "x") and ds[v].dtype == bool, v
    assert ds["change_score"].dims == ("time", "y", "x") and ds["change_score"].dtype == np.float32
    for v in C.PER_TIME:
        assert ds[v].dims == ("time",), v
    assert ds["ingested"].dtype == bool and ds["analysed"].dtype == bool
    assert ds["valid_fraction"].dtype == np.float32 and ds["cloud_fraction"].dtype == np.float32
    for v in C.OPTIONAL_DERIVED:
        assert ds[v].dims == ("time", "y", "x") and ds[v].dtype == np.uint8, v
    expected_vars = set(BANDS) | {"valid", "cloud", "shadow", "change", "change_score"} | set(C.OPTIONAL_DERIVED) | set(C.PER_TIME)
    assert set(ds.data_vars) == expected_vars
    # lazy, with the requested spatial chunks and one time step per chunk
    for v in set(BANDS) | {"valid", "cloud", "shadow", "change", "change_score"}:
        assert isinstance(ds[v].data, da.Array), v
        assert ds[v].data.chunksize == (1, CHUNK, CHUNK), v
    # the derived layers written for slot 0 read back; slot 1 is at fill values
    d = _derived(0)
    np.testing.assert_array_equal(ds["cloud"].isel(time=0).values, d["cloud"].values)
    np.testing.assert_array_equal(ds["change_score"].isel(time=0).values, d["change_score"].values)
    assert np.isnan(ds["change_score"].isel(time=1).values).all()
    assert ds["analysed"].values.tolist() == [True, False]


def test_plain_open_zarr_is_georeferenced(cube_url):
    """The contract: xr.open_zarr(...) followed by .rio.crs / .rio.transform() works."""
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    ds = xr.open_zarr(cube_url, consolidated=False, decode_coords="all")
    assert ds["red"].rio.crs.to_epsg() == 32636
    assert ds["red"].rio.transform() == GRID.transform
    assert ds["red"].attrs.get("grid_mapping") == "spatial_ref" or ds["red"].encoding.get("grid_mapping") == "spatial_ref"


def test_write_derived_requires_all_layers(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    C.write_scene_slice(cube_url, 0, _scene(0))
    before = _snapshot(cube_url)
    with pytest.raises(ValueError, match="change_score"):
        C.write_derived(cube_url, 0, _derived(0).drop_vars("change_score"))
    assert _snapshot(cube_url) == before
    assert not C.slots(cube_url)[0].analysed


def test_write_derived_sets_analysed_and_cloud_fraction(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2))], chunk=CHUNK)
    sc = _scene(4)
    C.write_scene_slice(cube_url, 1, sc)
    d = _derived(1)
    cf = C.write_derived(cube_url, 1, d.chunk({"y": 2 * CHUNK, "x": CHUNK}))
    valid = sc["valid"].values
    expected = float(((d["cloud"].values | d["shadow"].values) & valid).sum()) / float(valid.sum())
    assert cf == pytest.approx(expected, rel=1e-6)
    s = C.slots(cube_url)
    assert [(x.ingested, x.analysed) for x in s] == [(False, False), (True, True)]
    ds = C.open_cube(cube_url)
    assert float(ds["cloud_fraction"].values[0]) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_array_equal(ds["shadow"].isel(time=0).values, d["shadow"].values)
    np.testing.assert_array_equal(ds["change"].isel(time=0).values, d["change"].values)


def test_region_write_leaves_other_slots_untouched(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2)), ("C", _t(3))], chunk=CHUNK)
    C.write_scene_slice(cube_url, 0, _scene(0))
    C.write_scene_slice(cube_url, 2, _scene(2))
    C.write_derived(cube_url, 0, _derived(0))
    before = _snapshot(cube_url)

    def of_slot(key: str, i: int) -> bool:
        parts = key.split("/")
        return len(parts) >= 3 and parts[1] == "c" and parts[2] == str(i)

    C.write_scene_slice(cube_url, 1, _scene(1, lazy=True), commit_slot=False)
    C.write_derived(cube_url, 1, _derived(1), commit_slot=False)
    after = _snapshot(cube_url)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed, "slot 1 should have been written"
    assert all(of_slot(k, 1) for k in changed), sorted(k for k in changed if not of_slot(k, 1))
    # every gridded variable of slot 1 was written (partial edge chunks included)
    for v in set(BANDS) | {"valid", "cloud", "shadow", "change_score"}:
        assert any(k.startswith(f"{v}/c/1") for k in changed), v
    # the commit touches only the one-chunk per-time arrays
    C.commit(cube_url, {1: {"valid_fraction": 0.5, "ingested": True, "cloud_fraction": 0.1, "analysed": True}})
    committed = {k for k, h in _snapshot(cube_url).items() if after.get(k) != h}
    assert committed == {f"{v}/c/0" for v in C.PER_TIME}, sorted(committed)
    # and the values of the other slots are what was written for them
    ds = C.open_cube(cube_url)
    np.testing.assert_array_equal(ds["red"].isel(time=0).values, _scene(0)["red"].values)
    np.testing.assert_array_equal(ds["red"].isel(time=2).values, _scene(2)["red"].values)
    np.testing.assert_array_equal(ds["red"].isel(time=1).values, _scene(1)["red"].values)


def test_rewriting_a_slot_replaces_it(cube_url):
    """A retried ingest writes the same slot again: the second write wins entirely."""
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    C.write_scene_slice(cube_url, 0, _scene(0))
    C.write_scene_slice(cube_url, 0, _scene(5))
    ds = C.open_cube(cube_url)
    np.testing.assert_array_equal(ds["nir"].isel(time=0).values, _scene(5)["nir"].values)
    np.testing.assert_array_equal(ds["valid"].isel(time=0).values, _scene(5)["valid"].values)


# ---------------------------------------------------------------- sitewatch.open_site

def test_open_site_url_forms(tmp_path):
    store = tmp_path / "store"
    url = str(store / "mysite" / "cube.zarr")
    C.extend(url, GRID, BANDS, [("A", _t(1)), ("B", _t(2))], chunk=CHUNK)
    C.write_scene_slice(url, 1, _scene(1))
    for ds in (sitewatch.open_site(url), sitewatch.open_site(str(store / "mysite")),
               sitewatch.open_site("mysite", store=str(store)), sitewatch.open_site(f"file://{store}/mysite/")):
        assert [str(v) for v in ds.scene_id.values] == ["B"]
        assert ds.rio.crs.to_epsg() == 32636
    assert sitewatch.open_site(url, committed_only=False).sizes["time"] == 2
    with pytest.raises(C.CubeError):
        sitewatch.open_site("othersite", store=str(store))


# ---------------------------------------------------------------- QA band variable

def test_qa_variable_stored_with_fill_and_flags(cube_url):
    """A QA variable (Fmask, fill 255) is uint16 (time, y, x) with its fill value in slots not yet
    written, CF flag attributes, and is written with the bands by write_scene_slice."""
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2))], chunk=CHUNK, qa={"fmask": 255})
    sc = _scene(2, lazy=True)
    fm = np.random.default_rng(0).choice(np.array([0, 1, 2, 3, 4, 255], np.uint16), size=GRID.shape)
    sc["fmask"] = (("y", "x"), da.from_array(fm, chunks=CHUNK))
    C.write_scene_slice(cube_url, 1, sc)
    ds = C.open_cube(cube_url, committed_only=False)
    q = ds["fmask"]
    assert q.dtype == np.uint16 and q.dims == ("time", "y", "x")
    assert q.attrs["flag_values"] == [0, 1, 2, 3, 4, 255] and "cloud_shadow" in q.attrs["flag_meanings"]
    assert q.attrs["nodata"] == 255 and q.encoding.get("grid_mapping") == "spatial_ref"
    assert (q.isel(time=0).values == 255).all()  # never written: the fill value
    np.testing.assert_array_equal(q.isel(time=1).values, fm)
    # a second extend keeps the QA variable; a cube without it does not fit a QA sensor
    C.extend(cube_url, GRID, BANDS, [("C", _t(3))], chunk=CHUNK, qa={"fmask": 255})
    assert (C.open_cube(cube_url, committed_only=False)["fmask"].isel(time=2).values == 255).all()
    other = cube_url.replace("cube.zarr", "plain.zarr")
    C.extend(other, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    with pytest.raises(C.CubeError, match="lacks QA variable"):
        C.extend(other, GRID, BANDS, [("B", _t(2))], chunk=CHUNK, qa={"scl": 0})


def test_qa_for_profile():
    assert C.qa_for_profile("generic") == {}
    assert C.qa_for_profile("sentinel2-l2a") == {"scl": 0}
    assert C.qa_for_profile("landsat-c2-l2") == {"qa_pixel": 1}
    assert C.qa_for_profile("landsat-tm-etm-fmask") == {"fmask": 255}
    with pytest.raises(ValueError, match="expected a QA name"):
        C.extend("/nonexistent/cube.zarr", GRID, BANDS, [("A", _t(1))], qa={"red": 0})


# ---------------------------------------------------------------- commit protocol: capacity, growth, crashes

def test_capacity_grows_by_doubling_and_keeps_everything(cube_url, monkeypatch):
    monkeypatch.setattr(C, "CAPACITY", 4)
    C.extend(cube_url, GRID, BANDS, [(f"S{i}", _t(1 + i)) for i in range(3)], chunk=CHUNK)
    C.write_scene_slice(cube_url, 0, _scene(0))
    assert C._lengths(C._group(cube_url, None)) == dict.fromkeys(C._lengths(C._group(cube_url, None)), 4)
    idx = C.extend(cube_url, GRID, BANDS, [(f"S{i}", _t(1 + i)) for i in range(3, 9)], chunk=CHUNK)
    assert sorted(idx.values()) == list(range(3, 9))
    assert set(C._lengths(C._group(cube_url, None)).values()) == {9}  # max(2 * 4, 4 + 5 needed)
    assert [s.scene_id for s in C.slots(cube_url)] == [f"S{i}" for i in range(9)]
    ds = C.open_cube(cube_url)
    assert [str(v) for v in ds.scene_id.values] == ["S0"]
    np.testing.assert_array_equal(ds["red"].isel(time=0).values, _scene(0)["red"].values)
    assert C.open_cube(cube_url, committed_only=False).sizes["time"] == 9


def test_growth_cut_short_still_opens_and_is_completed(cube_url, monkeypatch):
    monkeypatch.setattr(C, "CAPACITY", 2)
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2))], chunk=CHUNK)
    C.write_scene_slice(cube_url, 0, _scene(0))
    g = C._group(cube_url, None, mode="r+")
    for name in ("red", "valid", "ingested"):  # a writer killed after resizing three arrays
        g[name].resize((6, *g[name].shape[1:]))
    ds = C.open_cube(cube_url)
    assert ds.sizes["time"] == 1 and str(ds.scene_id.values[0]) == "A"
    np.testing.assert_array_equal(ds["red"].isel(time=0).values, _scene(0)["red"].values)
    assert [s.scene_id for s in C.slots(cube_url)] == ["A", "B"]
    C.extend(cube_url, GRID, BANDS, [("C", _t(3))], chunk=CHUNK)  # the next writer completes the growth
    assert set(C._lengths(C._group(cube_url, None)).values()) == {6}
    assert [s.scene_id for s in C.slots(cube_url)] == ["A", "B", "C"]


def test_creation_cut_short_is_recreated(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    C._group(cube_url, None, mode="r+").attrs.pop("sitewatch_cube_version")  # killed before the last step
    assert C.slots(cube_url) == []
    with pytest.raises(C.CubeError, match="cut short"):
        C.open_cube(cube_url)
    assert C.extend(cube_url, GRID, BANDS, [("B", _t(2))], chunk=CHUNK) == {"B": 0}
    assert [s.scene_id for s in C.slots(cube_url)] == ["B"]


def test_foreign_or_old_stores_are_never_overwritten(cube_url):
    import zarr

    zarr.open_group(cube_url, mode="w", zarr_format=3).attrs["title"] = "someone else's data"
    before = _snapshot(cube_url)
    with pytest.raises(C.CubeError, match="another tool"):
        C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    with pytest.raises(C.CubeError, match="another tool"):
        C.open_cube(cube_url)
    zarr.open_group(cube_url, mode="r+").attrs.update({"title": C.CUBE_TITLE, "sitewatch_cube_version": 1})
    with pytest.raises(C.CubeError, match="version 1"):
        C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    assert set(_snapshot(cube_url)) == set(before)


def test_commit_validates_and_orders(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2))], chunk=CHUNK)
    with pytest.raises(ValueError, match="slot 500"):
        C.commit(cube_url, {500: {"ingested": True}})
    with pytest.raises(ValueError, match="'bogus'"):
        C.commit(cube_url, {0: {"bogus": 1}})
    C.commit(cube_url, {1: {"valid_fraction": 0.25, "ingested": True}})
    a, b = C.slots(cube_url)
    assert not a.ingested and b.ingested and b.valid_fraction == pytest.approx(0.25)


def test_uncommitted_written_slot_is_hidden_then_committed(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2))], chunk=CHUNK)
    vf = C.write_scene_slice(cube_url, 1, _scene(1), commit_slot=False)
    assert C.open_cube(cube_url).sizes["time"] == 0
    C.commit(cube_url, {1: {"valid_fraction": vf, "ingested": True}})
    ds = C.open_cube(cube_url)
    assert [str(v) for v in ds.scene_id.values] == ["B"] and float(ds.valid_fraction.values[0]) == pytest.approx(vf)


def test_reads_after_writes_see_the_new_data_on_a_dask_cluster(cube_url):
    """Re-opening a store after a write gives new dask keys: a distributed scheduler still
    holding the earlier read's results must not hand them back."""
    from distributed import Client, LocalCluster

    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        first = C._open(cube_url)["red"].isel(time=0).persist()
        assert int(first.max().compute()) == 0
        C.write_scene_slice(cube_url, 0, _scene(0))
        again = C._open(cube_url)["red"].isel(time=0)
        assert again.data.name != first.data.name
        np.testing.assert_array_equal(again.compute().values, _scene(0)["red"].values)
        del first, client


# ---------------------------------------------------------------- reading only what is asked for

def test_time_range_and_window_read_only_their_chunks(cube_url, monkeypatch):
    """open_site is lazy (opening reads no band chunk) with decoded times; a time range and a
    small window read exactly the band chunks that hold them."""
    import zarr.storage

    C.extend(cube_url, GRID, BANDS, [(f"S{d}", _t(d)) for d in range(1, 6)], chunk=CHUNK)
    slots = {s.scene_id: s.index for s in C.slots(cube_url)}
    for d in range(1, 6):
        C.write_scene_slice(cube_url, slots[f"S{d}"], _scene(d))
    reads: list[str] = []
    for cls in (zarr.storage.LocalStore, zarr.storage.FsspecStore):
        orig = cls.get

        async def get(self, key, *a, _orig=orig, **kw):
            reads.append(key)
            return await _orig(self, key, *a, **kw)

        monkeypatch.setattr(cls, "get", get)
    ds = sitewatch.open_site(cube_url)
    assert ds.time.dtype == np.dtype("datetime64[ns]") and ds.sizes["time"] == 5
    assert not [k for k in reads if k.startswith(("red/c", "blue/c", "nir/c", "valid/c"))]
    reads.clear()
    sub = ds.red.sel(time=slice("2026-01-02", "2026-01-03")).isel(y=slice(70, 75), x=slice(10, 20))
    values = sub.values
    assert values.shape == (2, 5, 10)
    chunk_reads = sorted(k for k in reads if "/c/" in k)
    # pixels y 70..74 are in the second row of 64-px chunks, x 10..19 in the first column
    assert chunk_reads == sorted(f"red/c/{slots[s]}/1/0" for s in ("S2", "S3")), chunk_reads
    full = _scene(2).red.values[70:75, 10:20]
    np.testing.assert_array_equal(values[0], full)

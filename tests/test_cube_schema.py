"""Tests for the on-disk schema of the site datacube (sitewatch.io.cube, version 3): the per-time
``sensor``, the CF scale/offset encoding of the band counts (exact round trip, no double
scaling), the CF attributes and grid mapping, what GDAL makes of it, and the refusal of older
stores."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr
from rasterio.errors import RasterioIOError

import sitewatch
from sitewatch.grid import SiteGrid
from sitewatch.io import cube as C
from sitewatch.sensors import get_profile

UTC = dt.timezone.utc
BANDS = ("blue", "red", "nir")
GRID = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=96, height=80)
CHUNK = 64
GDAL_VERSION = tuple(int(p) for p in rasterio.__gdal_version__.split(".")[:2])
GDAL_READS_ZARR_PYTHON_V3 = GDAL_VERSION >= (3, 11)  # OSGeo/gdal#11787: 'bytes' (and 'zstd') codecs in Zarr v3


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.fixture
def cube_url(tmp_path) -> str:
    return str(tmp_path / "site" / "cube.zarr")


def _t(day: int) -> dt.datetime:
    return dt.datetime(2026, 1, day, 8, 30, tzinfo=UTC)


def _counts(seed: int, grid: SiteGrid = GRID) -> np.ndarray:
    """uint16 counts over the whole range, with nodata (0) and the extremes present."""
    a = np.random.default_rng(seed).integers(0, 65536, size=grid.shape, dtype=np.uint16)
    a[0, :10] = 0
    a[1, :3] = (1, 65535, 10000)
    return a


def _scene(seed: int, grid: SiteGrid = GRID, chunks: int | None = None) -> xr.Dataset:
    data = {b: (("y", "x"), _counts(seed + i, grid)) for i, b in enumerate(BANDS)}
    data["valid"] = (("y", "x"), np.all([data[b][1] != 0 for b in BANDS], axis=0))
    ds = xr.Dataset(data, coords=grid.coords())
    return ds.chunk({"y": chunks, "x": chunks}) if chunks else ds


def _meta(cube_url: str, name: str = "") -> dict:
    return json.loads(Path(cube_url, name, "zarr.json").read_text())


def _snapshot(url: str) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(url):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, url)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def _open_zarr_plain(url: str, **kw) -> xr.Dataset:
    """``xr.open_zarr(url)`` with xarray's defaults (CF decoding on). Without consolidated
    metadata xarray warns that it fell back to reading each array's metadata: expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated metadata")
        return xr.open_zarr(url, **kw)


# ---------------------------------------------------------------- per-time sensor

def test_sensor_recorded_per_slot(cube_url):
    C.extend(cube_url, GRID, BANDS, [("G", _t(1))], chunk=CHUNK)  # default: generic
    C.extend(cube_url, GRID, BANDS, [("L1", _t(3)), ("L0", _t(2))], chunk=CHUNK, sensor="landsat-c2-l2")
    C.extend(cube_url, GRID, BANDS, [("S", _t(4))], chunk=CHUNK, sensor=get_profile("sentinel2-l2a"))
    # a scene delivered again keeps its slot and its sensor
    before = _snapshot(cube_url)
    assert C.extend(cube_url, GRID, BANDS, [("G", _t(1))], chunk=CHUNK, sensor="sentinel2-l2a") == {"G": 0}
    assert _snapshot(cube_url) == before
    expected = {"G": "generic", "L0": "landsat-c2-l2", "L1": "landsat-c2-l2", "S": "sentinel2-l2a"}
    assert {s.scene_id: s.sensor for s in C.slots(cube_url)} == expected
    for ds in (C.open_cube(cube_url, committed_only=False), sitewatch.open_site(cube_url, committed_only=False)):
        assert ds["sensor"].dims == ("time",) and "sensor" in ds.coords
        assert {str(i): s for i, s in zip(ds.scene_id.values, ds.sensor.values)} == expected
        assert all(type(s) is str for s in ds.sensor.values)
    # the store: a string array along time in one PER_TIME_CHUNK chunk, like scene_id
    meta = _meta(cube_url, "sensor")
    assert meta["dimension_names"] == ["time"] and meta["data_type"] == "string"
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [C.PER_TIME_CHUNK]
    plain = _open_zarr_plain(cube_url)
    assert [str(v) for v in plain.sensor.values[:4]] == ["generic", "landsat-c2-l2", "landsat-c2-l2", "sentinel2-l2a"]
    assert str(plain.sensor.values[4]) == ""  # a free slot


def test_sensor_is_validated_before_anything_is_written(cube_url):
    with pytest.raises(ValueError, match=r"sensor 'landsat-9'.*expected a sensor profile"):
        C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK, sensor="landsat-9")
    assert not os.path.exists(cube_url)
    with pytest.raises(ValueError, match="sensor"):
        C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK, sensor=None)


def test_slot_allocation_writes_time_then_sensor_then_scene_id(cube_url, monkeypatch):
    """The scene id commits the allocation, so it is written last: an allocated slot always has
    its time and sensor."""
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    order: list[str] = []
    original = zarr.Array.set_orthogonal_selection

    def recording(self, *args, **kwargs):
        order.append(self.path)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(zarr.Array, "set_orthogonal_selection", recording)
    C.extend(cube_url, GRID, BANDS, [("B", _t(2))], chunk=CHUNK, sensor="landsat-c2-l2")
    assert order == ["time", "sensor", "scene_id"]


def test_sensor_grows_with_the_capacity_and_survives_a_growth_cut_short(cube_url, monkeypatch):
    monkeypatch.setattr(C, "CAPACITY", 2)
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2))], chunk=CHUNK, sensor="landsat-c2-l2")
    C.extend(cube_url, GRID, BANDS, [("C", _t(3))], chunk=CHUNK, sensor="sentinel2-l2a")
    g = C._group(cube_url, None)
    assert g["sensor"].shape == (4,) and set(C._lengths(g).values()) == {4}
    # a writer killed after resizing some arrays, but not the sensor
    g = C._group(cube_url, None, mode="r+")
    for name in ("red", "scene_id", "ingested"):
        g[name].resize((8, *g[name].shape[1:]))
    assert [(s.scene_id, s.sensor) for s in C.slots(cube_url)] == [("A", "landsat-c2-l2"), ("B", "landsat-c2-l2"), ("C", "sentinel2-l2a")]
    assert C.open_cube(cube_url, committed_only=False).sizes["time"] == 3
    C.extend(cube_url, GRID, BANDS, [("D", _t(4))], chunk=CHUNK)  # completes the growth
    assert C._group(cube_url, None)["sensor"].shape == (8,)
    assert [s.sensor for s in C.slots(cube_url)] == ["landsat-c2-l2", "landsat-c2-l2", "sentinel2-l2a", "generic"]


# ---------------------------------------------------------------- CF scale/offset of the bands

def test_band_variables_are_uint16_with_cf_scale_offset_and_fill(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    for b in BANDS:
        meta = _meta(cube_url, b)
        assert meta["data_type"] == "uint16" and meta["fill_value"] == 0, b
        attrs = meta["attributes"]
        assert attrs["scale_factor"] == pytest.approx(1e-4) and attrs["add_offset"] == 0.0 and attrs["_FillValue"] == 0, b
        assert attrs["grid_mapping"] == "spatial_ref" and attrs["units"] == "1" and attrs["eo_common_name"] == b
        assert "nodata" not in attrs and "reflectance_scale" not in attrs  # replaced by the CF attributes


def test_plain_open_zarr_decodes_float_reflectance_with_nan_for_nodata(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2))], chunk=CHUNK)
    sc = _scene(0)
    C.write_scene_slice(cube_url, 0, sc)
    ds = _open_zarr_plain(cube_url)
    for b in BANDS:
        assert np.issubdtype(ds[b].dtype, np.floating), b
        got = ds[b].isel(time=0).values
        counts = sc[b].values
        np.testing.assert_array_equal(np.isnan(got), counts == 0)
        np.testing.assert_allclose(got[counts != 0], counts[counts != 0] * 1e-4, rtol=1e-12)
        assert np.isnan(ds[b].isel(time=1).values).all()  # never written: all nodata
        # the decoded values encode back to the very same counts
        np.testing.assert_array_equal(np.where(np.isnan(got), 0, np.round(got / 1e-4)).astype(np.uint16), counts)
    # masks and QA-free variables are not touched by CF decoding
    assert ds["valid"].dtype == bool and ds["change_score"].dtype == np.float32


@pytest.mark.parametrize("chunks", [None, CHUNK, 2 * CHUNK, 50], ids=["numpy", "aligned", "aligned-multiple", "misaligned"])
def test_scene_slices_round_trip_exactly(cube_url, chunks):
    """Region writes store the counts as given: no second scaling by the store's scale_factor,
    whatever the input's chunks (misaligned ones are rechunked to the Zarr chunks)."""
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2)), ("C", _t(3))], chunk=CHUNK)
    sc = _scene(7, chunks=chunks)
    C.write_scene_slice(cube_url, 1, sc)
    g = C._group(cube_url, None)
    for b in BANDS:
        np.testing.assert_array_equal(g[b][1], sc[b].values, err_msg=b)  # the stored counts, bit for bit
        assert not g[b][0].any() and not g[b][2].any(), b  # other slots untouched
    for ds in (C.open_cube(cube_url), sitewatch.open_site(cube_url), C._open(cube_url).isel(time=[1])):
        for b in BANDS:
            assert ds[b].dtype == np.uint16, b
            np.testing.assert_array_equal(ds[b].isel(time=0).values, sc[b].values, err_msg=b)
        np.testing.assert_array_equal(ds["valid"].isel(time=0).values, sc["valid"].values)


def test_sitewatch_reads_raw_counts_with_cf_attributes(cube_url):
    """open_cube / open_site give the stored counts (reflectance x 10000, 0 = nodata), the CF
    attributes kept as attributes (so the raw form is self-describing)."""
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    C.write_scene_slice(cube_url, 0, _scene(3))
    ds = sitewatch.open_site(cube_url)
    red = ds["red"]
    assert red.dtype == np.uint16 and isinstance(red.data, da.Array)
    assert red.attrs["scale_factor"] == pytest.approx(1e-4) and red.attrs["add_offset"] == 0.0 and red.attrs["_FillValue"] == 0
    assert "scale_factor" not in red.encoding  # nothing would scale it again on a write
    assert red.rio.nodata == 0


def test_region_write_refuses_float_reflectance_for_bands(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    before = _snapshot(cube_url)
    sc = _scene(1)
    sc["red"] = sc["red"].astype(np.float32) * 1e-4
    with pytest.raises(ValueError, match="'red' got dtype float32; expected integer"):
        C.write_scene_slice(cube_url, 0, sc)
    with pytest.raises(ValueError, match="expected one of the cube's"):
        C.write_scene_slice(cube_url, 0, _scene(1).assign(swir22=_scene(1)["red"]))
    with pytest.raises(ValueError, match="shape"):
        C.write_scene_slice(cube_url, 0, _scene(1).isel(x=slice(0, 90)))
    assert _snapshot(cube_url) == before


# ---------------------------------------------------------------- CF attributes and grid mapping

def test_cf_attributes(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK, qa={"fmask": 255})
    group = _meta(cube_url)["attributes"]
    assert group["Conventions"] == "CF-1.8" and group["sitewatch_cube_version"] == C.CUBE_VERSION == 3
    x, y, t = (_meta(cube_url, n)["attributes"] for n in ("x", "y", "time"))
    assert (x["standard_name"], x["units"], x["axis"]) == ("projection_x_coordinate", "m", "X") and x["long_name"]
    assert (y["standard_name"], y["units"], y["axis"]) == ("projection_y_coordinate", "m", "Y") and y["long_name"]
    assert (t["standard_name"], t["axis"]) == ("time", "T") and t["units"].startswith("milliseconds since 1970-01-01")
    for name, meaning in (("valid", "valid"), ("cloud", "cloud"), ("shadow", "cloud_shadow"), ("change", "change")):
        attrs = _meta(cube_url, name)["attributes"]
        assert attrs["flag_values"] == [0, 1] and attrs["flag_meanings"].split()[1] == meaning and attrs["long_name"], name
    # every (time, y, x) variable points at the grid mapping
    gridded = [n for n in os.listdir(cube_url) if os.path.isdir(os.path.join(cube_url, n))
               and _meta(cube_url, n).get("dimension_names") == ["time", "y", "x"]]
    assert set(gridded) == set(BANDS) | {"fmask", "valid", "cloud", "shadow", "change", "change_score", "mask_flags", "cloud_score"}
    flags = _meta(cube_url, "mask_flags")["attributes"]
    assert flags["flag_masks"] == [1, 2, 4, 8, 16] and flags["flag_meanings"].split() == ["cloud", "cloud_shadow", "snow", "water", "saturated"]
    score = _meta(cube_url, "cloud_score")
    assert score["attributes"]["valid_range"] == [0, 100] and score["fill_value"] == C.SCORE_FILL and score["data_type"] == "uint8"
    for n in gridded:
        assert _meta(cube_url, n)["attributes"]["grid_mapping"] == "spatial_ref", n
    sr = _meta(cube_url, "spatial_ref")["attributes"]
    from pyproj import CRS

    assert CRS.from_wkt(sr["crs_wkt"]).to_epsg() == 32636 and CRS.from_wkt(sr["spatial_ref"]).to_epsg() == 32636
    assert [float(v) for v in sr["GeoTransform"].split()] == [GRID.x0, 10.0, 0.0, GRID.y0, 0.0, -10.0]
    # xarray with its defaults, then rioxarray
    ds = _open_zarr_plain(cube_url)
    assert ds.rio.crs.to_epsg() == 32636 and ds.rio.transform() == GRID.transform
    assert ds["red"].rio.crs.to_epsg() == 32636 and ds["red"].rio.transform() == GRID.transform
    assert ds["fmask"].dtype == np.uint16  # QA flags are not CF-decoded


def test_geographic_crs_coordinates_are_longitude_latitude(cube_url):
    grid = SiteGrid(crs="EPSG:4326", x0=36.0, y0=35.5, resolution=0.001, width=40, height=30)
    C.extend(cube_url, grid, BANDS, [("A", _t(1))], chunk=CHUNK)
    x, y = (_meta(cube_url, n)["attributes"] for n in ("x", "y"))
    assert (x["standard_name"], x["units"], x["axis"]) == ("longitude", "degrees_east", "X")
    assert (y["standard_name"], y["units"], y["axis"]) == ("latitude", "degrees_north", "Y")
    ds = _open_zarr_plain(cube_url)
    assert ds.rio.crs.to_epsg() == 4326 and ds.rio.transform() == grid.transform


# ---------------------------------------------------------------- GDAL

def _written_cube(cube_url: str) -> xr.Dataset:
    C.extend(cube_url, GRID, BANDS, [("A", _t(1)), ("B", _t(2))], chunk=CHUNK)
    sc = _scene(5)
    C.write_scene_slice(cube_url, 0, sc)
    return sc


def _check_gdal_band(path: str, sc: xr.Dataset) -> None:
    with rasterio.open(path) as src:
        assert src.crs is not None and src.crs.to_epsg() == 32636
        assert src.transform == GRID.transform
        assert (src.height, src.width) == GRID.shape
        assert src.dtypes[0] == "uint16" and src.nodata == 0
        assert src.scales[0] == pytest.approx(1e-4) and src.offsets[0] == 0.0
        np.testing.assert_array_equal(src.read(1), sc["red"].values)


@pytest.mark.xfail(not GDAL_READS_ZARR_PYTHON_V3, raises=RasterioIOError, strict=True,
                   reason=f"GDAL {rasterio.__gdal_version__} (rasterio {rasterio.__version__} wheel) cannot decode Zarr v3 "
                          "arrays written by zarr-python 3 ('Unsupported codec: bytes'); fixed in GDAL 3.11 (OSGeo/gdal#11787)")
def test_gdal_opens_a_band_with_crs_and_transform(cube_url):
    sc = _written_cube(cube_url)
    _check_gdal_band(f'ZARR:"{cube_url}":/red', sc)  # the whole array: one GDAL band per time slot
    _check_gdal_band(f'ZARR:"{cube_url}":/red:0', sc)  # one slot


# A GDAL that reads Zarr v3 (>= 3.11) comes with rasterio >= 1.5, whose wheels need Python >= 3.12.
# Where such an interpreter exists (SITEWATCH_GDAL_PYTHON, or python3.12/python3.13 on PATH), the
# cube is checked with it in a venv of its own (.venv-gdal/, made once; needs PyPI).
GDAL_RASTERIO = "rasterio==1.5.2"
ROOT = Path(__file__).resolve().parents[1]


def _newer_gdal_python() -> str | None:
    import shutil
    import subprocess

    venv = ROOT / ".venv-gdal"
    py = venv / "bin" / "python"
    if not py.exists():
        import glob

        candidates = [os.environ.get("SITEWATCH_GDAL_PYTHON"), shutil.which("python3.13"), shutil.which("python3.12"),
                      *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[23]*/bin/python")))]
        base = None
        for c in filter(None, candidates):
            try:  # a pyenv shim for a version that is not selected exits non-zero
                ok = subprocess.run([c, "-c", "import sys, venv; sys.exit(sys.version_info < (3, 12))"],
                                    capture_output=True, timeout=60).returncode == 0
            except (subprocess.SubprocessError, OSError):
                ok = False
            if ok:
                base = c
                break
        if base is None:
            return None
        try:
            subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
            subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", GDAL_RASTERIO],
                           check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as exc:
            import shutil as sh

            sh.rmtree(venv, ignore_errors=True)
            pytest.fail(f"could not set up {GDAL_RASTERIO} under {base}: {exc}")
    return str(py)


def test_gdal_311_or_newer_opens_the_cube_georeferenced(cube_url):
    """GDAL's Zarr driver (a GDAL >= 3.11, through rasterio in its own interpreter) opens the v3
    store itself: right CRS, transform, shape, dtype, nodata, scale, offset and pixels."""
    import subprocess

    py = _newer_gdal_python()
    if py is None:
        pytest.skip("no Python >= 3.12 here for a rasterio wheel with GDAL >= 3.11 (set SITEWATCH_GDAL_PYTHON)")
    sc = _written_cube(cube_url)
    paths = [f'ZARR:"{cube_url}":/red', f'ZARR:"{cube_url}":/red:0']
    run = subprocess.run([py, str(ROOT / "tests" / "gdal_check.py"), *paths], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    assert tuple(int(p) for p in got["gdal"].split(".")[:2]) >= (3, 11), got["gdal"]
    want_sha = hashlib.sha256(np.ascontiguousarray(sc["red"].values).tobytes()).hexdigest()
    for path, info in got["paths"].items():
        assert info["epsg"] == 32636, (path, info)
        assert info["transform"] == pytest.approx(list(GRID.transform)[:6]), (path, info)
        assert info["shape"] == list(GRID.shape) and info["dtype"] == "uint16" and info["nodata"] == 0
        assert info["scale"] == pytest.approx(1e-4) and info["offset"] == 0.0
        assert info["sha256_band1"] == want_sha, path
    assert got["paths"][paths[0]]["count"] == C.CAPACITY  # one GDAL band per time slot
    assert got["paths"][paths[1]]["count"] == 1


@pytest.mark.skipif(GDAL_READS_ZARR_PYTHON_V3, reason="only GDAL < 3.11 has this limitation")
def test_gdal_before_311_fails_on_the_bytes_codec_only(cube_url):
    """Pins down why the test above is an expected failure: the array->bytes codec name of the
    final Zarr v3 spec, not the cube's metadata."""
    _written_cube(cube_url)
    with pytest.raises(RasterioIOError, match="Unsupported codec: bytes"):
        rasterio.open(f'ZARR:"{cube_url}":/red')


def test_gdal_reads_the_cf_georeferencing_from_a_zarr_v2_copy(cube_url, tmp_path):
    """The cube's CF metadata (grid_mapping -> spatial_ref, x/y, scale/offset/fill) is what GDAL
    needs: checked with the GDAL at hand on a Zarr v2 copy of the same arrays and attributes
    (GDAL 3.10 decodes Zarr v2), until the v3 store itself opens (test above)."""
    sc = _written_cube(cube_url)
    ds = xr.open_zarr(cube_url, consolidated=False, mask_and_scale=False, decode_times=False)
    for v in ds.variables.values():
        v.encoding = {}
    copy = str(tmp_path / "copy-v2.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(copy, zarr_format=2, consolidated=False)
    _check_gdal_band(f'ZARR:"{copy}":/red', sc)
    _check_gdal_band(f'ZARR:"{copy}":/red:0', sc)


# ---------------------------------------------------------------- version

def test_version_2_stores_are_refused_with_a_clear_error(cube_url):
    C.extend(cube_url, GRID, BANDS, [("A", _t(1))], chunk=CHUNK)
    zarr.open_group(cube_url, mode="r+", zarr_format=3).attrs["sitewatch_cube_version"] = 2
    before = _snapshot(cube_url)
    for call in (lambda: C.extend(cube_url, GRID, BANDS, [("B", _t(2))], chunk=CHUNK), lambda: C.open_cube(cube_url),
                 lambda: C.slots(cube_url), lambda: sitewatch.open_site(cube_url)):
        with pytest.raises(C.CubeError, match=r"sitewatch_cube_version 2; expected 3 .*version 2 predate.*sensor.*rebuild"):
            call()
    assert _snapshot(cube_url) == before


def test_chunk_alignment_check():
    assert C._aligned((64, 16), 64) and C._aligned((128, 64, 32), 64) and C._aligned((80,), 64)
    assert not C._aligned((50, 30), 64) and not C._aligned((64, 32, 64), 64)

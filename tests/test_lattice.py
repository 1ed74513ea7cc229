"""Tests of sitewatch/io/lattice.py: recognising a source on the site grid's pixel lattice, and
reading its blocks straight from the file with exactly what GDAL's warper (a float32 WarpedVRT,
nearest, NaN nodata) gives, inside and outside the source, with and without nodata."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from sitewatch.grid import SiteGrid
from sitewatch.io import lattice

CRS = "EPSG:32636"
RES = 10.0
X0, Y0 = 500000.0, 3900000.0


def _tif(mem: MemoryFile, data: np.ndarray, nodata, x0: float = X0, y0: float = Y0, res: float = RES, crs: str = CRS,
         mask: np.ndarray | None = None):
    with mem.open(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype, crs=crs,
                  transform=Affine(res, 0, x0, 0, -res, y0), nodata=nodata, tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(data, 1)
        if mask is not None:
            dst.write_mask(mask)
    return mem.open()


def _warped(src, grid: SiteGrid, rows, cols, src_nodata) -> np.ndarray:
    with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                   resampling=Resampling.nearest, src_nodata=src_nodata, nodata=np.nan, dtype="float32") as vrt:
        return vrt.read(1, window=Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0]))


@pytest.mark.parametrize("dtype, nodata", [("uint16", 0), ("uint16", 7), ("uint16", None), ("float32", np.nan), ("int16", -9999)])
@pytest.mark.parametrize("dcol, drow", [(0, 0), (-13, 5), (40, -30)])
def test_block_reads_equal_the_warper(dtype, nodata, dcol, drow):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 40, (150, 170)).astype(dtype)  # small values: the nodata value occurs
    if nodata is not None and not np.isnan(nodata):
        data[:20, :20] = nodata
    if dtype == "float32":
        data[5:9, 30:60] = np.nan
    # a site grid shifted by whole pixels, reaching beyond the source on two sides
    grid = SiteGrid(CRS, X0 + dcol * RES, Y0 - drow * RES, RES, 160, 140)
    with MemoryFile() as mem, _tif(mem, data, nodata) as src:
        assert lattice.grid_offset(src, grid) == (drow, dcol)
        for rows, cols in (((0, 140), (0, 160)), ((0, 64), (64, 128)), ((128, 140), (100, 160)), ((1, 2), (3, 4))):
            got = lattice.read_block(src, (drow, dcol), rows, cols, nodata)
            want = _warped(src, grid, rows, cols, nodata)
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
        if nodata is not None or (dcol, drow) != (0, 0):  # nodata pixels, or the grid reaches beyond the source
            assert np.isnan(lattice.read_block(src, (drow, dcol), (0, 140), (0, 160), nodata)).any()


def test_a_block_wholly_outside_the_source_is_all_nan():
    with MemoryFile() as mem, _tif(mem, np.ones((50, 50), np.uint16), 0) as src:
        out = lattice.read_block(src, (500, 500), (0, 10), (0, 20), 0)
        assert out.shape == (10, 20) and np.isnan(out).all()


def test_an_empty_block_is_refused():
    with MemoryFile() as mem, _tif(mem, np.ones((50, 50), np.uint16), 0) as src:
        with pytest.raises(ValueError, match="lattice read got rows \\(5, 5\\)"):
            lattice.read_block(src, (0, 0), (5, 5), (0, 4), 0)


@pytest.mark.parametrize("grid, why", [
    (SiteGrid(CRS, X0 + 5.0, Y0, RES, 40, 40), "half a pixel off"),
    (SiteGrid(CRS, X0, Y0, 20.0, 40, 40), "another pixel size"),
    (SiteGrid("EPSG:32637", X0, Y0, RES, 40, 40), "another CRS"),
])
def test_sources_off_the_lattice_are_warped(grid, why):
    with MemoryFile() as mem, _tif(mem, np.ones((50, 50), np.uint16), 0) as src:
        assert lattice.grid_offset(src, grid) is None, why


def test_a_source_with_its_own_mask_is_warped():
    data = np.ones((64, 64), np.uint16)
    mask = np.full((64, 64), 255, np.uint8)
    mask[:10] = 0
    with MemoryFile() as mem, _tif(mem, data, None, mask=mask) as src:
        assert lattice.grid_offset(src, SiteGrid(CRS, X0, Y0, RES, 64, 64)) is None

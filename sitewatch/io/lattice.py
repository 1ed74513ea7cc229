"""Reading a source that already lies on the site's pixel lattice, without GDAL's warper.

A scene stored on the site grid's own lattice (same CRS, same north-up pixel size, origin a
whole number of pixels away: synthetic scenes, and real tiles when the site grid is snapped to
the tile's pixels) needs no resampling: a block of the site grid is a plain window of the file.
Reading that window directly gives the same pixels as a nearest-neighbour WarpedVRT onto the
site grid, several times faster (measured by benchmarks/pipeline.py: the warper's set-up and
per-pixel transform dominated the reads)."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from ..grid import SiteGrid


def grid_offset(src: rasterio.io.DatasetReader, grid: SiteGrid) -> tuple[int, int] | None:
    """``(row, col)`` of the site grid's first pixel in the source's pixels when the source lies
    on the grid's lattice (same CRS, same north-up pixel size, whole-pixel offset) and has no
    mask of its own beyond its nodata value (a mask or alpha band the warper would apply);
    otherwise None."""
    t, gt = src.transform, grid.transform
    if t.b != 0 or t.d != 0 or abs(t.a - gt.a) > 1e-9 * abs(gt.a) or abs(t.e - gt.e) > 1e-9 * abs(gt.e):
        return None
    if any(f not in (MaskFlags.all_valid, MaskFlags.nodata) for f in src.mask_flag_enums[0]):
        return None
    if src.crs is None or src.crs != rasterio.crs.CRS.from_user_input(grid.crs):
        return None
    col, row = (gt.c - t.c) / t.a, (gt.f - t.f) / t.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


def read_block(src: rasterio.io.DatasetReader, offset: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int],
               src_nodata: float | None) -> np.ndarray:
    """Band 1 for site rows ``rows`` x cols ``cols`` (half-open) as float32, NaN where the
    source holds ``src_nodata`` (None: no nodata) or has no pixel: what a float32 WarpedVRT onto
    the site grid with nearest resampling and NaN as its nodata gives. ``offset``: from
    :func:`grid_offset`."""
    if rows[1] <= rows[0] or cols[1] <= cols[0]:
        raise ValueError(f"lattice read got rows {rows!r}, cols {cols!r}; expected half-open ranges with end > start")
    out = np.full((rows[1] - rows[0], cols[1] - cols[0]), np.nan, np.float32)
    r0, r1 = max(rows[0] + offset[0], 0), min(rows[1] + offset[0], src.height)
    c0, c1 = max(cols[0] + offset[1], 0), min(cols[1] + offset[1], src.width)
    if r0 < r1 and c0 < c1:
        data = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
        part = data.astype(np.float32)
        if src_nodata is not None:
            part[np.isnan(data) if np.isnan(src_nodata) else (data == src_nodata)] = np.nan
        dr, dc = r0 - rows[0] - offset[0], c0 - cols[0] - offset[1]
        out[dr:dr + (r1 - r0), dc:dc + (c1 - c0)] = part
    return out
